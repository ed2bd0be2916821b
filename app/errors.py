"""The error-code catalogue and the one error page.

Every refusal a shopper can meet has a code here: the HTTP status, what we tell
the shopper, what they can do next, and a hint for the operator reading logs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import g, jsonify, render_template, request, url_for
from flask_wtf.csrf import CSRFError

from app.extensions import db
from app.logs import new_request_id
from app.webhooks import PATH_PREFIX

log = logging.getLogger("tiffin.errors")


@dataclass(frozen=True)
class ErrorCode:
    code: str
    http_status: int
    shopper_message: str
    next_step: str
    operator_hint: str
    refresh_seconds: int | None = None  # the page reloads itself (payment may still land)
    headline: str = ""  # the few words the page leads with and its title starts with

    @property
    def title(self) -> str:
        return self.headline or self.code.replace("_", " ").capitalize()


_CODES = [
    ErrorCode("PAYMENT_NOT_COMPLETED", 402,
              "Your payment was not completed, so you have not been charged.",
              "Go back to the plan and start the checkout again.",
              "Gateway reports the session unpaid/canceled; the order stays pending or failed.",
              headline="Payment not completed"),
    ErrorCode("PAYMENT_DECLINED", 402,
              "Your payment was declined by the card issuer or bank.",
              "Try another card or payment method, or contact your bank.",
              "Gateway declined the payment; the reason is on the order (failure_code/message).",
              headline="Payment declined"),
    ErrorCode("PAYMENT_SIGNATURE_INVALID", 400,
              "We could not verify this payment response, so nothing was changed.",
              "If you were charged, your order will be confirmed automatically; otherwise try again.",
              "Signature check failed on a return/callback or webhook: wrong secret, tampering or replay.",
              headline="We could not verify this payment"),
    ErrorCode("PAYMENT_USER_MISMATCH", 403,
              "This payment belongs to a different account than the one you are signed in with.",
              "Sign in with the account you paid from. Contact support if that is this account.",
              "Order/gateway metadata user differs from the signed-in user; see fix_payment_user_mismatch.",
              headline="This payment belongs to another account"),
    ErrorCode("PAYMENT_AMOUNT_MISMATCH", 409,
              "The amount paid does not match the price of the plan, so we have not activated it yet.",
              "Our team has been alerted and will sort it out; you will not be charged twice.",
              "Gateway amount/currency differs from the plan; order set to needs_review.",
              headline="The amount paid does not match"),
    ErrorCode("PAYMENT_SESSION_NOT_FOUND", 404,
              "We could not find this payment session.",
              "Start the checkout again from the plan page.",
              "Return/callback named a session or order id the gateway or our database does not know.",
              headline="Payment session not found"),
    ErrorCode("PAYMENT_SESSION_MISMATCH", 400,
              "This payment confirmation does not belong to the order it names, so nothing was "
              "changed.",
              "Open your account page to see your orders. If you paid, that order is confirmed "
              "automatically.",
              "Return/callback named one order but a payment session or gateway order of another "
              "(possible tampering); logged at WARNING with both ids and the user, audited as "
              "payment_session_mismatch; no order changed.",
              headline="This confirmation belongs to another order"),
    ErrorCode("PAYMENT_CONFLICT", 409,
              "This payment clashes with one we have already recorded, so nothing was changed.",
              "You will not be charged twice. Our team has been alerted and will sort it out.",
              "A unique key refused the fulfilment (the payment id is recorded on another order, "
              "or a second live subscription) and no settled row won; order set to needs_review, "
              "the constraint is in the log line.",
              headline="This payment is already recorded"),
    ErrorCode("PAYMENT_UNMATCHED", 409,
              "We received a payment we could not match to one of your orders, so nothing was "
              "changed yet.",
              "You will not be charged twice: our team reviews it and refunds or applies it.",
              "A gateway reported a payment for no order or subscription we hold (possible "
              "duplicate charge); held as a needs_review order, nothing granted. Refund it with "
              "`flask orders refund REF`, or grant it with `flask orders grant REF`.",
              headline="Payment being reviewed"),
    ErrorCode("PAYMENT_PENDING_CONFIRMATION", 202,
              "Your payment has been received and is being confirmed. This page updates by itself.",
              "No need to pay again. If this takes more than a few minutes, check your account page.",
              "Gateway unreachable or payment still processing; webhook or reconcile will fulfil.",
              refresh_seconds=5,
              headline="Confirming your payment"),
    ErrorCode("PAYMENT_AWAITING_SHOPPER", 402,
              "We have not received a payment for this order yet: the payment page is waiting for you.",
              "Continue to the payment page to pay, or start again from the plan. You have not been charged.",
              "The gateway says its checkout is open and unpaid (the shopper left or has not paid yet).",
              headline="Waiting for your payment"),
    ErrorCode("PLAN_NOT_FOUND", 404,
              "We could not find that meal plan.",
              "Browse the plans we offer and pick another.",
              "Unknown plan slug or id.",
              headline="Meal plan not found"),
    ErrorCode("PLAN_INACTIVE", 410,
              "This meal plan is no longer offered.",
              "Choose one of the current plans.",
              "Plan has is_active = false; a paid order for it is set to needs_review.",
              headline="Meal plan no longer offered"),
    ErrorCode("ALREADY_SUBSCRIBED", 409,
              "You already have an active meal plan.",
              "Manage or change your plan from your account page.",
              "User holds a live (active/trialing/past_due) subscription.",
              headline="You already have a meal plan"),
    ErrorCode("PLAN_CHANGE_OUTDATED", 409,
              "Your plan had already changed when this payment arrived, so it was not applied.",
              "Our team has been alerted and will refund this payment; your plan stays as it is.",
              "A paid plan-change difference no longer fits the live subscription (ended, or "
              "moved to another plan first); order set to needs_review: refund it.",
              headline="Your plan had already changed"),
    ErrorCode("SUBSCRIPTION_CHANGE_UNSUPPORTED", 409,
              "This change cannot be made to a plan paid through this payment provider.",
              "Your plan stays as it is. Contact support, or start a new plan when this one ends.",
              "The gateway has no API for it (Razorpay cannot undo a cycle-end cancellation).",
              headline="This change is not possible"),
    ErrorCode("GATEWAY_NOT_CONFIGURED", 404,
              "That payment method is not available.",
              "Choose another payment method.",
              "Gateway is not enabled in this deployment (missing keys or disabled).",
              headline="Payment method not available"),
    ErrorCode("GATEWAY_UNAVAILABLE", 503,
              "The payment provider could not be reached. You have not been charged.",
              "Please try again in a minute.",
              "Gateway API call failed (network/5xx) while starting a checkout.",
              headline="Payment provider unreachable"),
    ErrorCode("ORDER_NOT_FOUND", 404,
              "We could not find that order.",
              "Check your account page for your orders.",
              "Order reference unknown or owned by another user.",
              headline="Order not found"),
    ErrorCode("WEBHOOK_SOURCE_FORBIDDEN", 403,
              "Forbidden.", "", "Webhook from an address outside WEBHOOK_ALLOWED_IPS.",
              headline="Forbidden"),
    ErrorCode("WEBHOOK_PAYLOAD_INVALID", 400,
              "Bad request.", "", "Webhook body is not the JSON the gateway documents.",
              headline="Bad request"),
    ErrorCode("WEBHOOK_LIVEMODE_MISMATCH", 400,
              "Bad request.", "", "Test-mode event sent to a live shop (or the reverse).",
              headline="Bad request"),
    ErrorCode("WEBHOOK_STORE_FAILED", 503,
              "Try again later.", "", "The event could not be stored; the gateway will redeliver.",
              headline="Try again later"),
    ErrorCode("REQUEST_TOO_LARGE", 413,
              "What was sent is too large for us to accept, so nothing was changed.",
              "Go back and send it again with less in it.",
              "Body larger than MAX_CONTENT_LENGTH (webhooks: WEBHOOK_MAX_BODY_BYTES).",
              headline="Too much to accept"),
    ErrorCode("FORM_EXPIRED", 400,
              "This form had expired, so nothing was changed.",
              "Go back, reload the page and send it again.",
              "CSRF token missing, expired or from another session (flask-wtf CSRFError).",
              headline="This form had expired"),
    ErrorCode("FORM_INVALID", 400,
              "Part of what was sent could not be accepted, so nothing was changed.",
              "Go back, reload the page and send it again.",
              "A form field failed validation (e.g. longer than its column); the detail names it.",
              headline="Please check the form"),
    ErrorCode("RATE_LIMITED", 429,
              "You have started several checkouts in a short time.",
              "Wait a minute, then try again.",
              "CHECKOUT_RATE_LIMIT exceeded for this user.",
              headline="Too many attempts"),
    ErrorCode("OPS_FORBIDDEN", 403,
              "This page is for Tiffin's operators only.",
              "Go back to the shop. If you run this shop, ask an operator to grant you the role.",
              "Signed-in user without the operator role asked for /ops/; "
              "grant it with `flask users grant-operator EMAIL`.",
              headline="Operators only"),
    ErrorCode("METRICS_FORBIDDEN", 403,
              "Forbidden.", "",
              "/metrics asked from outside METRICS_ALLOWED_IPS without the METRICS_TOKEN bearer token.",
              headline="Forbidden"),
    ErrorCode("PAGE_NOT_FOUND", 404,
              "We could not find that page.", "Go back to the shop.", "No such route.",
              headline="Page not found"),
    ErrorCode("INTERNAL_ERROR", 500,
              "Something went wrong on our side. If you paid, your payment is safe.",
              "Try again in a moment or contact support with the reference below.",
              "Unhandled exception; search the logs for the support reference.",
              headline="Something went wrong"),
]
CATALOGUE: dict[str, ErrorCode] = {c.code: c for c in _CODES}
JSON_PATHS = ("/healthz", "/readyz", "/metrics")  # machines get JSON errors, not a page
# RATE_LIMITED in sign-in's words (the catalogue's are about checkouts); the operator's
# side: LOGIN_ACCOUNT_RATE_LIMIT (failures per email) or LOGIN_ADDRESS_RATE_LIMIT (per address).
SIGN_IN_RATE_LIMITED_PAGE = {
    "headline": "There have been too many unsuccessful attempts to sign in, so signing in is paused.",
    "next_step": "Wait a few minutes (at most 15), then try again. Forgotten your password? "
                 "Contact support.",
}


class TiffinError(Exception):
    """A refusal with a catalogue code. `detail` is for logs, never shown raw."""

    def __init__(self, code: str, detail: str = "", *, order_reference: str | None = None,
                 shopper_detail: str | None = None, retry_plan_slug: str | None = None,
                 page: dict | None = None):
        if code not in CATALOGUE:
            raise ValueError(f"unknown error code {code}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.order_reference = order_reference
        self.shopper_detail = shopper_detail  # e.g. the gateway's decline reason
        self.retry_plan_slug = retry_plan_slug  # offer "Try again" on this plan's page
        # Where one code covers several situations (the pending page), what this one
        # says instead: headline, next_step, continue_url, state, refresh (False = stop).
        self.page = page or {}

    @property
    def entry(self) -> ErrorCode:
        return CATALOGUE[self.code]


def support_reference() -> str:
    """The request id (app/logs.py): the same string is on every log line of this request."""
    if "request_id" not in g:
        g.request_id = new_request_id()
    return g.request_id


def render_error(code: str, *, order_reference=None, shopper_detail=None, status=None,
                 retry_plan_slug=None, page=None):
    """Render the error page (or JSON for webhook routes) for a catalogue code."""
    entry = CATALOGUE[code]
    ref = support_reference()
    _end_failed_transaction()
    if request.path.startswith(PATH_PREFIX) or request.path in JSON_PATHS:
        return jsonify(error=code, support_reference=ref), status or entry.http_status
    page = page or {}
    refresh = page.get("refresh", True)
    return render_template("errors/error.html", error=entry, support_ref=ref,
                           order_reference=order_reference, shopper_detail=shopper_detail,
                           retry_url=url_for("storefront.plan", slug=retry_plan_slug)
                           if retry_plan_slug else None,
                           refresh_url=_refresh_url(entry, order_reference) if refresh else None,
                           refresh_stopped=not refresh, headline=page.get("headline"),
                           next_step=page.get("next_step"), continue_url=page.get("continue_url"),
                           checkout_state=page.get("state")), status or entry.http_status


def _end_failed_transaction() -> None:
    """Roll back first: after a failed statement PostgreSQL refuses every query in the
    transaction, the page's own (the signed-in user) included. A refused request keeps
    nothing it did not commit anyway (the session is discarded after the request)."""
    try:
        db.session.rollback()
    except Exception:  # the page must still render, e.g. with the database gone
        log.exception("rollback before the error page failed ref=%s", support_reference())


def _refresh_url(entry: ErrorCode, order_reference: str | None) -> str | None:
    """Where a self-refreshing page reloads: the order's own status page when we
    know the order (a POST callback URL must never be re-requested), else this
    page if it was a GET."""
    if not entry.refresh_seconds:
        return None
    if order_reference:
        return url_for("checkout.success", reference=order_reference)
    return request.full_path if request.method == "GET" else None


def register_errorhandlers(app):
    @app.errorhandler(TiffinError)
    def handle_tiffin_error(exc: TiffinError):
        log.warning("refused %s ref=%s path=%s detail=%s", exc.code, support_reference(),
                    request.path, exc.detail)
        return render_error(exc.code, order_reference=exc.order_reference,
                            shopper_detail=exc.shopper_detail, retry_plan_slug=exc.retry_plan_slug,
                            page=exc.page)

    @app.errorhandler(CSRFError)
    def handle_csrf_error(exc: CSRFError):
        log.warning("refused FORM_EXPIRED path=%s reason=%s", request.path, exc.description)
        return render_error("FORM_EXPIRED")

    @app.errorhandler(404)
    def handle_404(_exc):
        return render_error("PAGE_NOT_FOUND")

    @app.errorhandler(413)
    def handle_413(_exc):
        log.warning("refused REQUEST_TOO_LARGE path=%s", request.path)
        return render_error("REQUEST_TOO_LARGE")

    @app.errorhandler(429)
    def handle_429(_exc):
        log.warning("refused RATE_LIMITED path=%s", request.path)
        return render_error("RATE_LIMITED", page=SIGN_IN_RATE_LIMITED_PAGE
                            if request.endpoint == "auth.login" else None)

    @app.errorhandler(500)
    def handle_500(exc):
        log.exception("unhandled error ref=%s path=%s", support_reference(), request.path,
                      exc_info=getattr(exc, "original_exception", exc))
        return render_error("INTERNAL_ERROR")
