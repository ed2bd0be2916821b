"""Razorpay: Orders API + Checkout for packs, Subscriptions API for meal plans.

Only this module imports the `razorpay` SDK. The client is built per call
(`razorpay.Client(auth=(key_id, key_secret), base_url=RAZORPAY_API_BASE)`), so
threads never share a `requests.Session`; every call carries a timeout so an
outage is fast to detect in the request path.

Signatures (all hex HMAC-SHA256, checked by the SDK):
- Checkout callback for an order: `order_id|payment_id` with the key secret,
  where order_id is the id WE stored for the shopper's pending order.
- Checkout callback for a subscription: `payment_id|subscription_id`.
- Webhooks: the raw body with the webhook secret (several, comma-separated,
  while a secret is rotated). Razorpay signs no timestamp, so the
  `x-razorpay-event-id` header, kept for good, is the replay defence.
"""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import Mapping

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError, SignatureVerificationError

from app.errors import TiffinError
from app.gateways.base import (CHANGE_AT_CYCLE_END, DECLINED, NOT_COMPLETED, PAID, PENDING,
                               CheckoutStart, GatewayEvent, PaymentGateway, PaymentResult,
                               PlanChangeQuote, RemoteSubscription,
                               webhook_json_object)

log = logging.getLogger("tiffin.gateways.razorpay")

SIGNATURE_HEADER = "X-Razorpay-Signature"
EVENT_ID_HEADER = "x-razorpay-event-id"
CHECKOUT_TEMPLATE = "checkout/razorpay.html"
REQUEST_TIMEOUT_SECONDS = 10
LIST_PAGE_SIZE = 100
SUBSCRIPTION_PREFIX = "sub_"
# Razorpay needs a number of billing cycles; ten years of either period.
TOTAL_COUNT = {"week": 520, "month": 120}
PERIODS = {"week": "weekly", "month": "monthly"}
# Razorpay subscription status -> ours. `authenticated`: the mandate is set up and the
# first charge taken (Razorpay starts the cycle later); `halted`/`paused`: no access.
STATUS_MAP = {"created": "incomplete", "authenticated": "active", "active": "active",
              "pending": "past_due", "halted": "unpaid", "paused": "unpaid",
              "cancelled": "canceled", "completed": "completed", "expired": "canceled"}
# Network trouble or a Razorpay 5xx: the payment may still have succeeded.
UNREACHABLE = (requests.exceptions.RequestException, ServerError, GatewayError, ValueError)


def from_unix(value) -> datetime | None:
    """A Razorpay unix timestamp as aware UTC (None stays None)."""
    return None if value in (None, "") else datetime.fromtimestamp(int(value), tz=timezone.utc)


def note_int(notes, key: str) -> int | None:
    """An integer we put in an entity's `notes` (Razorpay sends [] for no notes)."""
    try:
        return int(notes[key]) if isinstance(notes, dict) and notes.get(key) else None
    except (TypeError, ValueError):
        return None


def webhook_secrets(config: Mapping) -> list[str]:
    return [s.strip() for s in config.get("RAZORPAY_WEBHOOK_SECRET", "").split(",") if s.strip()]


def is_subscription_id(gateway_order_id: str | None) -> bool:
    return bool(gateway_order_id) and gateway_order_id.startswith(SUBSCRIPTION_PREFIX)


class RazorpayGateway(PaymentGateway):
    name = "razorpay"
    display_name = "Razorpay"
    method_hint = "UPI, cards, netbanking"
    bills_subscriptions = True

    def client(self) -> razorpay.Client:
        return razorpay.Client(auth=(self.config["RAZORPAY_KEY_ID"],
                                     self.config["RAZORPAY_KEY_SECRET"]),
                               base_url=self.config.get("RAZORPAY_API_BASE")
                               or "https://api.razorpay.com")

    # --- checkout ------------------------------------------------------------
    def start_checkout(self, *, order, plan, user) -> CheckoutStart:
        """Create the Razorpay order (packs) or subscription (plans) for a pending order.

        Raises TiffinError GATEWAY_UNAVAILABLE when Razorpay cannot be reached or
        refuses, GATEWAY_NOT_CONFIGURED when a plan has no Razorpay plan id yet.
        """
        notes = {"user_id": str(user.id), "plan_id": str(plan.id), "reference": order.reference}
        try:
            if plan.is_recurring:
                if not plan.razorpay_plan_id:
                    raise TiffinError("GATEWAY_NOT_CONFIGURED",
                                      f"plan {plan.slug} has no razorpay_plan_id; run "
                                      "`flask razorpay sync-plans`")
                params = {
                    "plan_id": plan.razorpay_plan_id, "quantity": 1, "customer_notify": 1,
                    "total_count": TOTAL_COUNT.get(plan.billing_interval or "month", 120),
                    "notes": notes}
                if order.checkout_expires_at:  # the authorisation link closes with the checkout
                    params["expire_by"] = int(order.checkout_expires_at.timestamp())
                remote = self.client().subscription.create(params, timeout=REQUEST_TIMEOUT_SECONDS)
            else:
                remote = self.client().order.create({
                    "amount": order.amount_minor, "currency": order.currency,
                    "receipt": order.reference, "notes": notes}, timeout=REQUEST_TIMEOUT_SECONDS)
        except (BadRequestError, *UNREACHABLE) as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"razorpay create failed: {exc}") from exc
        context = {
            "razorpay_key_id": self.config["RAZORPAY_KEY_ID"],
            "razorpay_order_id": None if plan.is_recurring else remote["id"],
            "razorpay_subscription_id": remote["id"] if plan.is_recurring else None,
            "amount_minor": order.amount_minor, "currency": order.currency,
            "description": plan.name, "prefill_name": user.name, "prefill_email": user.email,
            "notes": notes,
        }
        return CheckoutStart(gateway_order_id=remote["id"], template=CHECKOUT_TEMPLATE,
                             context=context)

    def verify_return(self, params: Mapping, *, order=None) -> PaymentResult:
        """Verify what Checkout's success handler posted, against OUR stored id.

        The posted razorpay_order_id / razorpay_subscription_id is never trusted:
        the signature is checked over `order.gateway_order_id`. Then the payment is
        fetched: captured is PAID (with Razorpay's amount and currency, which the
        fulfilment helper compares); authorised is captured here when the amounts
        agree (auto-capture off), else PENDING with raw["authorized"] set.

        Raises TiffinError PAYMENT_SIGNATURE_INVALID (400) for a bad or missing
        signature or a payment of another order; PAYMENT_SESSION_NOT_FOUND without
        an order. Returns PENDING (never a failure) when Razorpay is unreachable.
        """
        if order is None or not order.gateway_order_id:
            raise TiffinError("PAYMENT_SESSION_NOT_FOUND", "razorpay verify without a stored order")
        stored_id = order.gateway_order_id
        utility = self.client().utility
        try:
            if is_subscription_id(stored_id):
                utility.verify_subscription_payment_signature({
                    "razorpay_subscription_id": stored_id,
                    "razorpay_payment_id": params["razorpay_payment_id"],
                    "razorpay_signature": params["razorpay_signature"]})
            else:
                utility.verify_payment_signature({
                    "razorpay_order_id": stored_id,
                    "razorpay_payment_id": params["razorpay_payment_id"],
                    "razorpay_signature": params["razorpay_signature"]})
        except (SignatureVerificationError, KeyError, TypeError, ValueError) as exc:
            raise TiffinError("PAYMENT_SIGNATURE_INVALID",
                              f"razorpay callback for {stored_id}: {type(exc).__name__} {exc}",
                              order_reference=order.reference) from exc
        payment_id = str(params["razorpay_payment_id"])
        try:
            payment = self.fetch_payment(payment_id)
        except (BadRequestError, *UNREACHABLE) as exc:
            log.warning("razorpay payment %s could not be fetched: %s", payment_id, exc)
            return PaymentResult(status=PENDING, gateway_order_id=stored_id,
                                 gateway_payment_id=payment_id)
        if not is_subscription_id(stored_id) and payment.get("order_id") != stored_id:
            raise TiffinError("PAYMENT_SIGNATURE_INVALID",
                              f"payment {payment_id} belongs to {payment.get('order_id')}, "
                              f"not {stored_id}", order_reference=order.reference)
        if payment.get("status") == "authorized":
            payment = self.capture_if_matching(payment, order.amount_minor, order.currency)
        result = self.payment_result(payment, gateway_order_id=stored_id)
        if payment.get("status") == "refunded":  # refunded in full before we fulfilled it
            result.status = NOT_COMPLETED
        if is_subscription_id(stored_id) and result.status == PAID:
            result.gateway_subscription_id = stored_id
            try:
                remote = self.client().subscription.fetch(stored_id, timeout=REQUEST_TIMEOUT_SECONDS)
                result.period_start = from_unix(remote.get("current_start"))
                result.period_end = from_unix(remote.get("current_end"))
                result.gateway_customer_id = remote.get("customer_id") or None
            except (BadRequestError, *UNREACHABLE) as exc:
                log.warning("razorpay subscription %s not fetched: %s", stored_id, exc)
        return result

    def fetch_payment(self, payment_id: str) -> dict:
        return self.client().payment.fetch(payment_id, timeout=REQUEST_TIMEOUT_SECONDS)

    def capture_if_matching(self, payment: dict, amount_minor: int, currency: str) -> dict:
        """Capture an authorised payment whose amount and currency are what we expect.

        A mismatched one is left uncaptured (Razorpay refunds it by itself) and the
        caller's fulfilment refuses it. Returns the payment as Razorpay now has it.
        """
        if payment.get("amount") != amount_minor or \
                str(payment.get("currency", "")).upper() != currency.upper():
            return payment
        try:
            return self.client().payment.capture(
                payment["id"], amount_minor, {"currency": currency.upper()},
                timeout=REQUEST_TIMEOUT_SECONDS)
        except (BadRequestError, *UNREACHABLE) as exc:
            log.warning("razorpay capture of %s failed: %s", payment["id"], exc)
            try:  # captured meanwhile (auto-capture, or a concurrent capture)?
                return self.fetch_payment(payment["id"])
            except (BadRequestError, *UNREACHABLE):
                return payment

    def payment_result(self, payment: dict, *, gateway_order_id: str | None = None
                       ) -> PaymentResult:
        """A Razorpay payment entity as a PaymentResult."""
        status = payment.get("status")
        notes = payment.get("notes")
        result = PaymentResult(
            status={"captured": PAID, "refunded": PAID, "authorized": PENDING,
                    "failed": DECLINED}.get(status, NOT_COMPLETED),
            gateway_order_id=gateway_order_id or payment.get("order_id") or "",
            gateway_payment_id=payment.get("id"), amount_minor=payment.get("amount"),
            currency=str(payment.get("currency") or "").upper() or None,
            metadata_user_id=note_int(notes, "user_id"), metadata_plan_id=note_int(notes, "plan_id"),
            order_reference=notes.get("reference") if isinstance(notes, dict) else None,
            gateway_customer_id=payment.get("customer_id") or None,
            failure_code=payment.get("error_code") or payment.get("error_reason"),
            failure_message=payment.get("error_description"),
            refunded_minor=int(payment.get("amount_refunded") or 0),
            created_at=from_unix(payment.get("created_at")), raw={"payment": payment})
        if status == "authorized":
            result.raw["authorized"] = True
        return result

    # --- webhooks ------------------------------------------------------------
    def parse_webhook(self, body: bytes, headers: Mapping) -> GatewayEvent:
        """Verify X-Razorpay-Signature over the raw body with any configured secret.

        Raises TiffinError PAYMENT_SIGNATURE_INVALID (missing header, no secret
        matches) or WEBHOOK_PAYLOAD_INVALID (not Razorpay's event JSON).
        """
        signature = headers.get(SIGNATURE_HEADER)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TiffinError("WEBHOOK_PAYLOAD_INVALID", "razorpay body is not UTF-8") from exc
        utility = self.client().utility
        for secret in webhook_secrets(self.config):
            try:
                utility.verify_webhook_signature(text, signature, secret)
                break
            except (SignatureVerificationError, TypeError):
                continue
        else:
            raise TiffinError("PAYMENT_SIGNATURE_INVALID",
                              "razorpay webhook signature missing" if not signature
                              else "razorpay webhook signature matches no configured secret")
        payload = webhook_json_object(text, "razorpay")
        try:
            event_type = str(payload["event"])
            if not isinstance(payload["payload"], dict):
                raise TypeError("payload is not an object")
            created = from_unix(payload.get("created_at"))
        except (ValueError, KeyError, TypeError) as exc:
            raise TiffinError("WEBHOOK_PAYLOAD_INVALID", f"razorpay body: {exc}") from exc
        # Razorpay always sends the header; a body hash keeps a redelivery without one idempotent.
        event_id = headers.get(EVENT_ID_HEADER) or "body_" + hashlib.sha256(body).hexdigest()
        return GatewayEvent(event_id=event_id, event_type=event_type, payload=payload,
                            created_at=created, livemode=None)

    # --- reconcile -------------------------------------------------------------
    def list_recent_payments(self, since: datetime) -> list[PaymentResult]:
        """Every payment created since `since`, newest first (GET /v1/payments, paged).

        A subscription charge carries Razorpay's own invoice order id; its
        subscription id and billing period are read from the invoice.
        """
        client, results, skip = self.client(), [], 0
        while True:
            page = client.payment.all({"from": int(since.timestamp()), "count": LIST_PAGE_SIZE,
                                       "skip": skip}, timeout=REQUEST_TIMEOUT_SECONDS)
            items = page.get("items", [])
            for payment in items:
                result = self.payment_result(payment)
                if payment.get("invoice_id"):
                    invoice = client.invoice.fetch(payment["invoice_id"],
                                                   timeout=REQUEST_TIMEOUT_SECONDS)
                    result.gateway_subscription_id = invoice.get("subscription_id")
                    result.period_start = from_unix(invoice.get("billing_start"))
                    result.period_end = from_unix(invoice.get("billing_end"))
                    result.gateway_customer_id = (result.gateway_customer_id
                                                  or invoice.get("customer_id") or None)
                results.append(result)
            if len(items) < LIST_PAGE_SIZE:
                break
            skip += LIST_PAGE_SIZE
        results.sort(key=lambda r: r.created_at or datetime.min.replace(tzinfo=timezone.utc),
                     reverse=True)
        return results

    def lookup_payment(self, order) -> PaymentResult:
        """An order's payments (captured is PAID; authorised is captured when it matches,
        else PENDING; only failed attempts or none is NOT_COMPLETED, since Checkout lets
        the shopper try again). A subscription is asked for its status: PENDING once its
        mandate is authenticated or it is active (its webhook or reconcile fulfils it).

        Raises TiffinError(GATEWAY_UNAVAILABLE) when Razorpay cannot be asked.
        """
        stored_id = order.gateway_order_id
        try:
            if is_subscription_id(stored_id):
                remote = self.client().subscription.fetch(stored_id, timeout=REQUEST_TIMEOUT_SECONDS)
                status = PENDING if remote.get("status") in ("authenticated", "active") \
                    else NOT_COMPLETED
                return PaymentResult(status=status, gateway_order_id=stored_id,
                                     gateway_subscription_id=stored_id)
            payments = self.client().order.payments(stored_id, timeout=REQUEST_TIMEOUT_SECONDS)
        except (BadRequestError, *UNREACHABLE) as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"razorpay order {stored_id}: {exc}") from exc
        items = payments.get("items", [])
        for wanted in ("captured", "authorized"):
            for payment in items:
                if payment.get("status") == wanted:
                    if wanted == "authorized":
                        payment = self.capture_if_matching(payment, order.amount_minor,
                                                           order.currency)
                    return self.payment_result(payment, gateway_order_id=stored_id)
        return PaymentResult(status=NOT_COMPLETED, gateway_order_id=stored_id)

    def order_payments(self, gateway_order_id: str) -> list[PaymentResult]:
        """The payments Razorpay holds for one of our orders (GET /v1/orders/:id/payments)."""
        page = self.client().order.payments(gateway_order_id, timeout=REQUEST_TIMEOUT_SECONDS)
        return [self.payment_result(p, gateway_order_id=gateway_order_id)
                for p in page.get("items", [])]

    # --- refunds -----------------------------------------------------------------
    def refund_payment(self, *, gateway_payment_id: str, amount_minor: int, idempotency_key: str,
                       notes: dict | None = None) -> dict:
        """Refund `amount_minor` of a captured payment; returns Razorpay's refund entity.

        Sends `X-Refund-Idempotency` so a retried command cannot refund twice.
        Raises TiffinError GATEWAY_UNAVAILABLE when Razorpay refuses or is unreachable.
        """
        if len(idempotency_key) < 10:
            raise ValueError("X-Refund-Idempotency needs at least 10 characters")
        try:
            return self.client().payment.refund(
                gateway_payment_id, {"amount": amount_minor, "speed": "normal", "notes": notes or {}},
                headers={"X-Refund-Idempotency": idempotency_key}, timeout=REQUEST_TIMEOUT_SECONDS)
        except (BadRequestError, *UNREACHABLE) as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE",
                              f"razorpay refund of {gateway_payment_id} failed: {exc}") from exc

    # --- plans (flask razorpay sync-plans) ----------------------------------------
    def list_plans(self) -> list[dict]:
        client, plans, skip = self.client(), [], 0
        while True:
            page = client.plan.all({"count": LIST_PAGE_SIZE, "skip": skip},
                                   timeout=REQUEST_TIMEOUT_SECONDS)
            items = page.get("items", [])
            plans.extend(items)
            if len(items) < LIST_PAGE_SIZE:
                return plans
            skip += LIST_PAGE_SIZE

    @staticmethod
    def plan_matches(remote: dict, plan) -> bool:
        """True when a Razorpay plan bills exactly what this meal plan costs, as often."""
        item = remote.get("item") or {}
        return (remote.get("period") == PERIODS.get(plan.billing_interval or "")
                and int(remote.get("interval") or 0) == plan.interval_count
                and item.get("amount") == plan.price_minor
                and str(item.get("currency", "")).upper() == plan.currency.upper())

    def create_plan(self, plan) -> dict:
        if plan.billing_interval not in PERIODS:
            raise ValueError(f"plan {plan.slug} has no billing interval Razorpay knows")
        return self.client().plan.create({
            "period": PERIODS[plan.billing_interval], "interval": plan.interval_count,
            "item": {"name": plan.name, "amount": plan.price_minor, "currency": plan.currency,
                     "description": plan.description[:255]},
            "notes": {"tiffin_plan": plan.slug}}, timeout=REQUEST_TIMEOUT_SECONDS)

    # --- the subscription behind a plan order (repair tool) --------------------------
    @classmethod
    def recorded_subscription_id(cls, order) -> str | None:
        """A plan's activation order is keyed on its subscription id (`sub_…`)."""
        if is_subscription_id(order.gateway_order_id):
            return order.gateway_order_id
        return super().recorded_subscription_id(order)

    def subscription_for_order(self, order, *, known_id: str | None = None
                               ) -> RemoteSubscription | None:
        """GET /v1/subscriptions/:id for the order's subscription (None for a pack)."""
        subscription_id = known_id or self.recorded_subscription_id(order)
        if not subscription_id:
            return None
        remote = self._remote(self.client().subscription.fetch, subscription_id)
        notes = remote.get("notes")
        return RemoteSubscription(
            id=remote["id"], status=STATUS_MAP.get(remote.get("status"), "unpaid"),
            customer_id=remote.get("customer_id") or None, price_id=remote.get("plan_id"),
            metadata_plan_id=note_int(notes, "plan_id"),
            cancel_at_period_end=False,  # the entity does not say; the webhook ends it
            period_start=from_unix(remote.get("current_start")),
            period_end=from_unix(remote.get("current_end")))

    # --- account actions: change Razorpay first, then the local copy ------------
    def _remote(self, call, *args):
        try:
            return call(*args, timeout=REQUEST_TIMEOUT_SECONDS)
        except (BadRequestError, *UNREACHABLE) as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"razorpay: {exc}") from exc

    def cancel_subscription_at_period_end(self, subscription) -> None:
        self._remote(self.client().subscription.cancel, subscription.gateway_subscription_id,
                     {"cancel_at_cycle_end": 1})

    def cancel_subscription_now(self, subscription) -> None:
        self._remote(self.client().subscription.cancel, subscription.gateway_subscription_id,
                     {"cancel_at_cycle_end": 0})

    def resume_subscription(self, subscription) -> None:
        # Razorpay has no API to withdraw a cycle-end cancellation; saying "resumed"
        # here would end the plan at the period end anyway.
        raise TiffinError("SUBSCRIPTION_CHANGE_UNSUPPORTED",
                          f"razorpay subscription {subscription.gateway_subscription_id}: "
                          "a cycle-end cancellation cannot be withdrawn")

    def quote_plan_change(self, subscription, new_plan, *, proration_date: int | None = None
                          ) -> PlanChangeQuote:
        """Razorpay switches plans at the end of the current cycle and prorates
        nothing: the new plan's price is charged when its first cycle starts."""
        self._razorpay_plan_id(new_plan)
        return PlanChangeQuote(timing=CHANGE_AT_CYCLE_END, currency=new_plan.currency,
                               next_invoice_minor=new_plan.price_minor,
                               next_invoice_at=subscription.current_period_end,
                               effective_at=subscription.current_period_end)

    def change_subscription_plan(self, subscription, new_plan, *,
                                 proration_date: int | None = None) -> None:
        """Schedule the plan change for the end of the current cycle
        (`schedule_change_at=cycle_end`)."""
        self._remote(self.client().subscription.edit, subscription.gateway_subscription_id,
                     {"plan_id": self._razorpay_plan_id(new_plan),
                      "schedule_change_at": "cycle_end"})

    @staticmethod
    def _razorpay_plan_id(plan) -> str:
        if not plan.razorpay_plan_id:
            raise TiffinError("GATEWAY_NOT_CONFIGURED", f"plan {plan.slug} has no razorpay_plan_id")
        return plan.razorpay_plan_id
