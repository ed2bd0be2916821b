"""The test gateway's hosted payment page (plays the part of the gateway).

Everything here stands in for a remote gateway: it sees only the signed session
token and its own table (test_gateway_payments, what each session's bank did),
answers with a signed redirect, and sends signed webhooks to /webhooks/test. It
never touches the shop's tables.
"""
import logging
import secrets
import threading
import urllib.request
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, redirect, render_template, request

from app.extensions import db
from app.gateways import get_gateway
from app.gateways.test import (DECLINE_REASONS, OUTCOME_DECLINE, OUTCOME_NO_REDIRECT,
                               OUTCOME_NO_WEBHOOK, OUTCOME_WEBHOOK_X3, OUTCOMES, SIGNATURE_HEADER,
                               SessionAlreadyUsed)

bp = Blueprint("test_gateway", __name__, url_prefix="/test-gateway")
log = logging.getLogger("tiffin.test_gateway")


def _post_webhook(app, body: bytes, signature: str) -> int:
    headers = {SIGNATURE_HEADER: signature, "Content-Type": "application/json"}
    url = app.config["TEST_GATEWAY_WEBHOOK_URL"]
    if url:  # a real HTTP delivery, e.g. to the gunicorn server in browser tests
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
    # In-process delivery through the same route, signature check and event store, in
    # an application context of its own: the gateway's request must not replace the
    # shopper's (their `g`, where Flask-Login keeps the signed-in user, and their
    # database session), or the page rendered after it shows them signed out.
    with app.app_context():
        response = app.test_client().post("/webhooks/test", data=body, headers=headers,
                                          environ_base={"REMOTE_ADDR": "127.0.0.1"})
        return response.status_code


def deliver_webhook(body: bytes, copies: int = 1) -> None:
    app = current_app._get_current_object()
    signature = get_gateway("test").sign_body(body)
    db.session.commit()  # end our transaction before the delivery writes (SQLite)
    delay = float(app.config.get("TEST_GATEWAY_WEBHOOK_DELAY_SECONDS") or 0)

    def send():
        for _ in range(copies):
            try:
                status = _post_webhook(app, body, signature)
                log.info("test gateway delivered webhook: HTTP %s", status)
            except OSError as exc:
                log.warning("test gateway could not deliver webhook: %s", exc)

    if delay > 0:  # arrive after the redirect, as real webhooks often do
        threading.Timer(delay, send).start()
    else:
        send()


@bp.route("/pay/<token>", methods=["GET", "POST"])
def pay(token):
    """The hosted payment page: pick what the bank does (once per session)."""
    gateway = get_gateway("test")
    session = gateway.load_session(token)
    if gateway.session_expired(session):
        return _outcome_page(session, None, status=410)
    recorded = gateway.recorded_outcome(session["order_id"])
    if recorded is not None:  # paid or declined already: say so, take nothing twice
        return _outcome_page(session, recorded, status=200 if request.method == "GET" else 409)
    if request.method == "GET":
        return render_template("test_gateway/pay.html", session=session, outcomes=OUTCOMES,
                               reasons=DECLINE_REASONS, token=token)
    outcome = request.form.get("outcome", "")
    reason = request.form.get("reason") or "card_declined"
    if outcome not in OUTCOMES or (outcome == OUTCOME_DECLINE and reason not in DECLINE_REASONS):
        abort(400)
    try:
        if outcome == OUTCOME_DECLINE:
            gateway.record_outcome(session, "declined", reason=reason)
        else:
            payment_id = "tgp_" + secrets.token_hex(12)
            gateway.record_outcome(session, "paid", payment_id=payment_id)
    except SessionAlreadyUsed as used:  # a second tab or click won the race
        return _outcome_page(session, used.record, status=409)
    return_url = "/payments/test/return?"
    if outcome == OUTCOME_DECLINE:
        deliver_webhook(gateway.build_event(session, "payment.failed", reason=reason))
        params = gateway.signed_return_params(session, "declined", reason=reason)
        return redirect(return_url + urlencode(params), code=303)

    if outcome != OUTCOME_NO_WEBHOOK:
        body = gateway.build_event(session, "payment.succeeded", payment_id=payment_id)
        deliver_webhook(body, copies=3 if outcome == OUTCOME_WEBHOOK_X3 else 1)
    if outcome == OUTCOME_NO_REDIRECT:
        return render_template("test_gateway/redirect_lost.html", session=session)
    params = gateway.signed_return_params(session, "paid", payment_id=payment_id)
    return redirect(return_url + urlencode(params), code=303)


def _outcome_page(session: dict, recorded, *, status: int):
    """A session that can take no payment: already paid, declined, or expired."""
    return render_template("test_gateway/outcome.html", session=session, recorded=recorded,
                           reason=DECLINE_REASONS.get(recorded.reason or "") if recorded else None
                           ), status
