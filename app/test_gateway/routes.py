"""The test gateway's hosted payment page (plays the part of the gateway).

Everything here stands in for a remote gateway: it sees only the signed session
token, answers with a signed redirect, and sends signed webhooks to
/webhooks/test. It never touches the shop's tables.
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
                               OUTCOME_NO_WEBHOOK, OUTCOME_WEBHOOK_X3, OUTCOMES, SIGNATURE_HEADER)

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
    # In-process delivery through the same route, signature check and event store.
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
    """The hosted payment page: pick what the bank does."""
    gateway = get_gateway("test")
    session = gateway.load_session(token)
    if request.method == "GET":
        return render_template("test_gateway/pay.html", session=session, outcomes=OUTCOMES,
                               reasons=DECLINE_REASONS, token=token)
    outcome = request.form.get("outcome", "")
    if outcome not in OUTCOMES:
        abort(400)
    return_url = "/payments/test/return?"
    if outcome == OUTCOME_DECLINE:
        reason = request.form.get("reason") or "card_declined"
        if reason not in DECLINE_REASONS:
            abort(400)
        deliver_webhook(gateway.build_event(session, "payment.failed", reason=reason))
        params = gateway.signed_return_params(session, "declined", reason=reason)
        return redirect(return_url + urlencode(params), code=303)

    payment_id = "tgp_" + secrets.token_hex(12)
    if outcome != OUTCOME_NO_WEBHOOK:
        body = gateway.build_event(session, "payment.succeeded", payment_id=payment_id)
        deliver_webhook(body, copies=3 if outcome == OUTCOME_WEBHOOK_X3 else 1)
    if outcome == OUTCOME_NO_REDIRECT:
        return render_template("test_gateway/redirect_lost.html", session=session)
    params = gateway.signed_return_params(session, "paid", payment_id=payment_id)
    return redirect(return_url + urlencode(params), code=303)

