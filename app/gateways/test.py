"""The built-in test gateway: a hosted payment page served by this app.

Like Shopify's Bogus Gateway, it lets anyone click through a purchase offline
and choose what the "bank" does. The checkout session is a signed token, the
return redirect carries an HMAC, and webhooks are signed with HMAC-SHA256 over
the raw body (TEST_GATEWAY_WEBHOOK_SECRET) and go through /webhooks/test like
any real gateway's. Like a real gateway it remembers
what happened to each session (its own table, test_gateway_payments), so a
session is paid or declined once and the shop can ask it about an order.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timezone
from typing import Mapping

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.errors import TiffinError
from app.extensions import db
from app.gateways.base import (DECLINED, NOT_COMPLETED, PAID, CheckoutStart, GatewayEvent,
                               PaymentGateway, PaymentResult, webhook_json_object)
from app.models.test_gateway import TestGatewayPayment

SIGNATURE_HEADER = "X-Test-Gateway-Signature"
SESSION_MAX_AGE_SECONDS = 24 * 3600

OUTCOME_PAY = "pay"
OUTCOME_DECLINE = "decline"
OUTCOME_NO_REDIRECT = "pay_no_redirect"     # webhook only: the browser never comes back
OUTCOME_NO_WEBHOOK = "pay_no_webhook"       # redirect only: the webhook is lost
OUTCOME_WEBHOOK_X3 = "pay_webhook_x3"       # the webhook is delivered three times
OUTCOMES = {
    OUTCOME_PAY: "Pay",
    OUTCOME_DECLINE: "Decline",
    OUTCOME_NO_REDIRECT: "Pay, but the redirect never returns (webhook only)",
    OUTCOME_NO_WEBHOOK: "Pay, but the webhook never arrives (redirect only)",
    OUTCOME_WEBHOOK_X3: "Pay, and the webhook is delivered three times",
}
DECLINE_REASONS = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
}


class SessionAlreadyUsed(Exception):
    """The session was already paid or declined; carries that first outcome."""

    def __init__(self, record: TestGatewayPayment):
        super().__init__(record.outcome)
        self.record = record


def _secrets(config: Mapping) -> list[str]:
    return [s.strip() for s in config.get("TEST_GATEWAY_WEBHOOK_SECRET", "").split(",") if s.strip()]


def sign(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _return_message(params: Mapping) -> bytes:
    fields = ("order_id", "payment_id", "status", "reason")
    return "|".join(str(params.get(f, "")) for f in fields).encode()


class TestGateway(PaymentGateway):
    __test__ = False  # not a pytest test class
    name = "test"
    display_name = "Test payment"
    method_hint = "no real money"

    # --- the shop's side ----------------------------------------------------
    def start_checkout(self, *, order, plan, user) -> CheckoutStart:
        gateway_order_id = "tgo_" + secrets.token_hex(12)
        expires_at = order.checkout_expires_at
        token = self.session_serializer().dumps({
            "order_id": gateway_order_id, "reference": order.reference,
            "amount_minor": order.amount_minor, "currency": order.currency,
            "user_id": user.id, "plan_id": plan.id, "email": user.email,
            "plan_name": (f"Change to {plan.name}: the difference" if order.kind == "plan_change"
                          else plan.name),
            "expires_at": int(expires_at.timestamp()) if expires_at else None,
        })
        return CheckoutStart(gateway_order_id=gateway_order_id,
                             redirect_url=f"/test-gateway/pay/{token}")

    def verify_return(self, params: Mapping, *, order=None) -> PaymentResult:
        signature = params.get("sig", "")
        message = _return_message(params)
        if not signature or not any(hmac.compare_digest(sign(s, message), signature)
                                    for s in _secrets(self.config)):
            raise TiffinError("PAYMENT_SIGNATURE_INVALID", "test gateway return signature mismatch")
        status = {"paid": PAID, "declined": DECLINED}.get(params.get("status"), NOT_COMPLETED)
        reason = params.get("reason") or None
        return PaymentResult(
            status=status, gateway_order_id=params["order_id"],
            gateway_payment_id=params.get("payment_id") or None,
            amount_minor=order.amount_minor if order is not None else None,
            currency=order.currency if order is not None else None,
            failure_code=reason, failure_message=DECLINE_REASONS.get(reason or ""))

    def lookup_payment(self, order) -> PaymentResult:
        """What the hosted page recorded for this order's session (its own memory)."""
        record = self.recorded_outcome(order.gateway_order_id or "")
        if record is None:
            return PaymentResult(status=NOT_COMPLETED, gateway_order_id=order.gateway_order_id)
        paid = record.outcome == "paid"
        return PaymentResult(
            status=PAID if paid else DECLINED, gateway_order_id=order.gateway_order_id,
            gateway_payment_id=record.payment_id, amount_minor=order.amount_minor,
            currency=order.currency, failure_code=None if paid else record.reason,
            failure_message=None if paid else DECLINE_REASONS.get(record.reason or ""))

    def parse_webhook(self, body: bytes, headers: Mapping) -> GatewayEvent:
        signature = headers.get(SIGNATURE_HEADER, "")
        if not signature or not any(hmac.compare_digest(sign(s, body), signature)
                                    for s in _secrets(self.config)):
            raise TiffinError("PAYMENT_SIGNATURE_INVALID", "test gateway webhook signature mismatch")
        payload = webhook_json_object(body, "test gateway")
        try:
            event_id, event_type = str(payload["id"]), str(payload["type"])
            created = datetime.fromtimestamp(int(payload["created"]), tz=timezone.utc)
            if not isinstance(payload["data"], dict):
                raise TypeError("data is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise TiffinError("WEBHOOK_PAYLOAD_INVALID", f"test gateway body: {exc}") from exc
        return GatewayEvent(event_id=event_id, event_type=event_type, payload=payload,
                            created_at=created, livemode=False)

    def refund_payment(self, *, gateway_payment_id: str, amount_minor: int, idempotency_key: str,
                       notes: dict | None = None) -> dict:
        """Refund at once (no bank to wait for). Keeping no state, it derives the refund
        id from the idempotency key: a repeated request gets the same refund back."""
        digest = hashlib.sha256(f"{gateway_payment_id}|{idempotency_key}".encode()).hexdigest()
        return {"id": "tgr_" + digest[:24], "amount": amount_minor, "status": "processed"}

    # --- the "gateway's" side: used by the hosted page in app/test_gateway ---
    def session_serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(_secrets(self.config)[0], salt="tiffin-test-gateway-session")

    def load_session(self, token: str) -> dict:
        try:
            return self.session_serializer().loads(token, max_age=SESSION_MAX_AGE_SECONDS)
        except BadSignature as exc:
            raise TiffinError("PAYMENT_SESSION_NOT_FOUND", "bad or expired test gateway session") from exc

    @staticmethod
    def session_expired(session: dict) -> bool:
        expires_at = session.get("expires_at")
        return bool(expires_at) and datetime.now(timezone.utc).timestamp() >= expires_at

    @staticmethod
    def recorded_outcome(gateway_order_id: str) -> TestGatewayPayment | None:
        return db.session.scalars(sa.select(TestGatewayPayment).where(
            TestGatewayPayment.gateway_order_id == gateway_order_id)).first()

    def record_outcome(self, session: dict, outcome: str, payment_id: str | None = None,
                       reason: str | None = None) -> TestGatewayPayment:
        """Remember what the bank did with a session, once: a second submission (two
        tabs, a double click, the back button) gets the first outcome back instead."""
        record = TestGatewayPayment(gateway_order_id=session["order_id"], outcome=outcome,
                                    payment_id=payment_id, reason=reason)
        db.session.add(record)
        try:
            db.session.commit()
        except sa.exc.IntegrityError:
            db.session.rollback()
            raise SessionAlreadyUsed(self.recorded_outcome(session["order_id"]))
        return record

    def signed_return_params(self, session: dict, status: str, payment_id: str = "",
                             reason: str = "") -> dict:
        params = {"order_id": session["order_id"], "payment_id": payment_id, "status": status,
                  "reason": reason}
        params["sig"] = sign(_secrets(self.config)[0], _return_message(params))
        return params

    def build_event(self, session: dict, event_type: str, payment_id: str = "",
                    reason: str = "") -> bytes:
        """A webhook body shaped like a small real gateway's event."""
        data = {
            "order_id": session["order_id"], "payment_id": payment_id or None,
            "amount_minor": session["amount_minor"], "currency": session["currency"],
            "reference": session["reference"],
            "metadata": {"user_id": session["user_id"], "plan_id": session["plan_id"]},
        }
        if reason:
            data["failure_code"] = reason
            data["failure_message"] = DECLINE_REASONS.get(reason, reason)
        event = {"id": "tge_" + secrets.token_hex(12), "type": event_type,
                 "created": int(datetime.now(timezone.utc).timestamp()), "data": data}
        return json.dumps(event, separators=(",", ":")).encode()

    def sign_body(self, body: bytes) -> str:
        return sign(_secrets(self.config)[0], body)
