"""Stripe: Checkout Sessions, return verification, signed webhooks, account actions.

Built on a `stripe.StripeClient` from config. `STRIPE_API_BASE` points it at a
local server in tests and development (a StripeClient ignores `stripe.api_base`).
API shapes are Stripe's "basil" ones: a subscription's period lives on
`items.data[].current_period_*`, an invoice names its subscription under
`parent.subscription_details.subscription`.

What we store per order: `gateway_order_id` is the Checkout Session id (or, for
a renewal, the invoice id); `gateway_payment_id` is what a Charge can be traced
back to: the PaymentIntent of a one-time payment, the invoice of a subscription
payment.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Mapping

import stripe

from app.errors import TiffinError
from app.gateways.base import (CHANGE_NOW, NOT_COMPLETED, PAID, PENDING, CheckoutStart,
                               GatewayEvent, PaymentGateway, PaymentResult, PlanChangeQuote,
                               RemoteSubscription,
                               webhook_json_object)

log = logging.getLogger("tiffin.gateways.stripe")

# One quick retry covers a dropped connection; more would keep a shopper waiting
# on the return page when Stripe is really down (the page then says "pending").
MAX_NETWORK_RETRIES = 1
HTTP_TIMEOUT_SECONDS = 15
SIGNATURE_HEADER = "Stripe-Signature"
PAID_STATUSES = ("paid", "no_payment_required")
# Stripe's bounds on a Checkout Session's expires_at, from its creation.
SESSION_MIN_LIFETIME = timedelta(minutes=30)
SESSION_MAX_LIFETIME = timedelta(hours=24)
# Stripe subscription status -> ours. Stripe's "paused" and "unpaid" both mean no access.
STATUS_MAP = {"active": "active", "trialing": "trialing", "past_due": "past_due",
              "canceled": "canceled", "incomplete": "incomplete",
              "incomplete_expired": "canceled", "unpaid": "unpaid", "paused": "unpaid"}


def ts(value) -> datetime | None:
    """A Stripe unix timestamp as timezone-aware UTC."""
    return datetime.fromtimestamp(int(value), tz=timezone.utc) if value else None


def session_expiry(wanted: datetime | None, now: datetime | None = None) -> datetime | None:
    """A Checkout Session's `expires_at` for the checkout lifetime we want, clamped to
    what Stripe accepts (30 minutes to 24 hours from creation), with a minute's margin
    each side for the time the request takes. Clamping is logged: the session then
    lives longer (or shorter) than CHECKOUT_EXPIRY_MINUTES."""
    if wanted is None:
        return None
    now = now or datetime.now(timezone.utc)
    earliest = now + SESSION_MIN_LIFETIME + timedelta(minutes=1)
    latest = now + SESSION_MAX_LIFETIME - timedelta(minutes=1)
    clamped = min(max(wanted, earliest), latest)
    if clamped != wanted:
        log.warning("stripe session lifetime clamped to %s (wanted %s): Stripe allows "
                    "30 minutes to 24 hours", clamped.isoformat(), wanted.isoformat())
    return clamped


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _as_dict(obj) -> dict:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj or {})


def _id(value) -> str | None:
    """An expandable field: an id string or an expanded object."""
    if isinstance(value, str) or value is None:
        return value
    return value.get("id")


def price_id_overrides(config: Mapping) -> dict[str, str]:
    """STRIPE_PRICE_IDS ("lunch-monthly=price_123,family-monthly=price_456") as a dict."""
    pairs = {}
    for part in (config.get("STRIPE_PRICE_IDS") or "").split(","):
        slug, _, price = part.partition("=")
        if slug.strip() and price.strip():
            pairs[slug.strip()] = price.strip()
    return pairs


def webhook_secrets(config: Mapping) -> list[str]:
    return [s.strip() for s in (config.get("STRIPE_WEBHOOK_SECRET") or "").split(",") if s.strip()]


def _signed_with(body: bytes, header: str, secret: str) -> bool:
    """Whether `header` signs `body` with `secret` within the SDK's 300 s tolerance."""
    try:
        return stripe.WebhookSignature.verify_header(body, header, secret,
                                                     tolerance=stripe.Webhook.DEFAULT_TOLERANCE)
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        return False


def key_is_live(key: str) -> bool | None:
    """True for a live key, False for a test key, None when the prefix says neither."""
    if key.startswith(("sk_live_", "rk_live_")):
        return True
    if key.startswith(("sk_test_", "rk_test_")):
        return False
    return None


def subscription_id_of_invoice(invoice: Mapping) -> str | None:
    """The subscription an invoice bills (basil shape, with the pre-basil field as fallback)."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return _id(details.get("subscription")) or _id(invoice.get("subscription"))


def invoice_period(invoice: Mapping) -> tuple[datetime | None, datetime | None]:
    lines = (invoice.get("lines") or {}).get("data") or []
    for line in lines:
        period = line.get("period") or {}
        if period.get("end"):
            return ts(period.get("start")), ts(period.get("end"))
    return None, None


def _is_proration(line: Mapping) -> bool:
    """A preview invoice line Stripe created to prorate a change (basil shape)."""
    details = (line.get("parent") or {}).get("subscription_item_details") or {}
    return bool(details.get("proration"))


def remote_subscription_from(data: Mapping) -> RemoteSubscription:
    """Map a Subscription object (fetched, or from an event) to RemoteSubscription."""
    items = (data.get("items") or {}).get("data") or []
    first = items[0] if items else {}
    price = first.get("price") or first.get("plan") or {}
    # basil: the period is per item; older shapes (and localstripe) keep it on the subscription.
    start = first.get("current_period_start") or data.get("current_period_start")
    end = first.get("current_period_end") or data.get("current_period_end")
    return RemoteSubscription(
        id=data["id"], status=STATUS_MAP.get(data.get("status"), "unpaid"),
        customer_id=_id(data.get("customer")), price_id=_id(price) if price else None,
        metadata_plan_id=_int_or_none((data.get("metadata") or {}).get("plan_id")),
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        period_start=ts(start), period_end=ts(end))


class StripeGateway(PaymentGateway):
    name = "stripe"
    display_name = "Stripe"
    method_hint = "card"
    return_session_fields = ("session_id",)
    bills_subscriptions = True

    def __init__(self, config: Mapping):
        super().__init__(config)
        self.client = stripe.StripeClient(
            config["STRIPE_SECRET_KEY"],
            base_addresses={"api": config.get("STRIPE_API_BASE") or "https://api.stripe.com"},
            max_network_retries=MAX_NETWORK_RETRIES,
            http_client=stripe.RequestsClient(timeout=HTTP_TIMEOUT_SECONDS))

    # --- checkout -----------------------------------------------------------
    def price_id_for(self, plan) -> str | None:
        return price_id_overrides(self.config).get(plan.slug) or plan.stripe_price_id

    def _line_item(self, plan) -> dict:
        price_id = self.price_id_for(plan)
        if price_id:
            return {"price": price_id, "quantity": 1}
        # Not synced yet (`flask stripe sync-prices`): describe the price inline.
        price_data = {"currency": plan.currency.lower(), "unit_amount": plan.price_minor,
                      "product_data": {"name": plan.name}}
        if plan.is_recurring:
            price_data["recurring"] = {"interval": plan.billing_interval or "month",
                                       "interval_count": plan.interval_count}
        return {"price_data": price_data, "quantity": 1}

    def start_checkout(self, *, order, plan, user) -> CheckoutStart:
        """Open a Checkout Session for a pending order.

        The idempotency key is derived from our order, so a retried or repeated
        call for the same order gets the same session back, never a second one.
        Raises TiffinError(GATEWAY_UNAVAILABLE) when Stripe refuses or cannot be reached.
        """
        base = self.config["APP_BASE_URL"].rstrip("/")
        metadata = {"user_id": str(user.id), "plan_id": str(plan.id),
                    "order_reference": order.reference}
        params = {
            "mode": "subscription" if plan.is_recurring else "payment",
            "line_items": [self._line_item(plan)],
            "client_reference_id": order.reference,
            "metadata": metadata,
            "success_url": f"{base}/checkout/stripe/return?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{base}/checkout/cancel/{order.reference}",
        }
        if user.stripe_customer_id:
            params["customer"] = user.stripe_customer_id
        else:
            params["customer_email"] = user.email
        if plan.is_recurring:
            params["subscription_data"] = {"metadata": metadata}
        else:
            params["payment_intent_data"] = {"metadata": metadata}
        expires_at = session_expiry(order.checkout_expires_at)
        if expires_at is not None:
            params["expires_at"] = int(expires_at.timestamp())
        try:
            session = self.client.v1.checkout.sessions.create(
                params, {"idempotency_key": f"tiffin-checkout-{order.reference}"})
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE",
                              f"stripe session for {order.reference}: {exc}") from exc
        return CheckoutStart(gateway_order_id=session.id, redirect_url=session.url,
                             expires_at=ts(getattr(session, "expires_at", None)) or expires_at)

    def session_result(self, session: Mapping) -> PaymentResult:
        """Map a Checkout Session (fetched, listed, or from an event) to a PaymentResult."""
        session = _as_dict(session)
        payment_status = session.get("payment_status")
        if payment_status in PAID_STATUSES:
            status = PAID
        elif session.get("status") == "complete":
            status = PENDING  # async payment method (bank debit) still processing
        else:
            status = NOT_COMPLETED  # open (shopper still there or left) or expired
        metadata = session.get("metadata") or {}
        subscription_id = _id(session.get("subscription"))
        payment_key = (_id(session.get("payment_intent")) if session.get("mode") == "payment"
                       else _id(session.get("invoice")))
        return PaymentResult(
            status=status, gateway_order_id=session["id"], gateway_payment_id=payment_key,
            amount_minor=_int_or_none(session.get("amount_total")),
            currency=(session.get("currency") or "").upper() or None,
            metadata_user_id=_int_or_none(metadata.get("user_id")),
            metadata_plan_id=_int_or_none(metadata.get("plan_id")),
            order_reference=session.get("client_reference_id") or metadata.get("order_reference"),
            gateway_customer_id=_id(session.get("customer")),
            gateway_subscription_id=subscription_id, created_at=ts(session.get("created")),
            raw=session)

    def verify_return(self, params: Mapping, *, order=None) -> PaymentResult:
        """Retrieve the order's own Checkout Session (the id we stored; the one in the
        return URL only without an order) and say where its payment stands.

        PAID only for payment_status paid / no_payment_required; PENDING while an
        async payment is processing or when Stripe cannot be reached.
        """
        stored = order.gateway_order_id if order is not None else None
        session_id = stored or params.get("session_id") or ""
        if not session_id.startswith("cs_"):
            raise TiffinError("PAYMENT_SESSION_NOT_FOUND", f"not a checkout session id {session_id!r}")
        try:
            session = self.client.v1.checkout.sessions.retrieve(session_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise TiffinError("PAYMENT_SESSION_NOT_FOUND", f"stripe: {exc}") from exc
            log.warning("stripe refused retrieving %s: %s", session_id, exc)
            return PaymentResult(status=PENDING, gateway_order_id=session_id)
        except stripe.StripeError as exc:
            log.warning("stripe unreachable retrieving %s: %s", session_id, exc)
            return PaymentResult(status=PENDING, gateway_order_id=session_id)
        return self._paid_session_result(session)

    def _paid_session_result(self, session) -> PaymentResult:
        """The session's result, with a paid plan's period as Stripe holds it."""
        result = self.session_result(session)
        if result.status == PAID and result.gateway_subscription_id:
            try:
                remote = self.fetch_subscription(result.gateway_subscription_id)
                result.period_start, result.period_end = remote.period_start, remote.period_end
            except TiffinError:
                pass  # the plan's own interval is used; the webhook syncs Stripe's period later
        return result

    def lookup_payment(self, order) -> PaymentResult:
        """Retrieve the order's Checkout Session: PAID, PENDING (an async payment still
        processing) or NOT_COMPLETED (open, or expired unpaid).

        Raises TiffinError(GATEWAY_UNAVAILABLE) when Stripe cannot be asked.
        """
        try:
            session = self.client.v1.checkout.sessions.retrieve(order.gateway_order_id)
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE",
                              f"stripe session {order.gateway_order_id}: {exc}") from exc
        return self._paid_session_result(session)

    def list_recent_payments(self, since: datetime) -> list[PaymentResult]:
        """For the reconcile backstop: Checkout Sessions created since `since`, newest
        first, plus the sessions whose payments Stripe's Events API shows refunded in
        that window, each with the refunded total in `refunded_minor`."""
        try:
            page = self.client.v1.checkout.sessions.list(
                {"created": {"gte": int(since.timestamp())}, "limit": 100})
            results = [self.session_result(s) for s in page.auto_paging_iter()]
            self._apply_refund_events(results, since)
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe list sessions/events: {exc}") from exc
        return results

    def _apply_refund_events(self, results: list[PaymentResult], since: datetime) -> None:
        by_payment = {r.gateway_payment_id: r for r in results if r.gateway_payment_id}
        events = self.client.v1.events.list(
            {"type": "charge.refunded", "created": {"gte": int(since.timestamp())}, "limit": 100})
        for event in events.auto_paging_iter():
            charge = _as_dict(event["data"]["object"])
            payment_intent = _id(charge.get("payment_intent"))
            if not payment_intent:
                continue
            result = by_payment.get(payment_intent) or self._session_for_payment(payment_intent)
            if result is None:
                continue
            # A plan's session is keyed by its first invoice: keep one result per payment.
            known = by_payment.setdefault(result.gateway_payment_id, result)
            if known is result and all(r is not result for r in results):
                results.append(result)
            known.refunded_minor = max(known.refunded_minor, int(charge.get("amount_refunded") or 0))

    def _session_for_payment(self, payment_intent: str) -> PaymentResult | None:
        """The Checkout Session a PaymentIntent paid: directly for a one-time payment;
        through its invoice and subscription for a plan's first payment."""
        page = self.client.v1.checkout.sessions.list({"payment_intent": payment_intent, "limit": 1})
        if page.data:
            return self.session_result(page.data[0])
        invoice_id = self.invoice_for_payment_intent(payment_intent)
        if not invoice_id:
            return None
        # Checkout Sessions cannot be listed by invoice: go through its subscription.
        invoice = self.client.v1.invoices.retrieve(invoice_id)
        subscription_id = subscription_id_of_invoice(_as_dict(invoice))
        result = self.find_session_for_subscription(subscription_id) if subscription_id else None
        # Only the first invoice is the session's payment; a renewal is its own order.
        return result if result is not None and result.gateway_payment_id == invoice_id else None

    def find_session_for_subscription(self, subscription_id: str) -> PaymentResult | None:
        """The Checkout Session that created a subscription (when its webhook is missing)."""
        try:
            page = self.client.v1.checkout.sessions.list(
                {"subscription": subscription_id, "limit": 1})
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe sessions of {subscription_id}: {exc}"
                              ) from exc
        return self.session_result(page.data[0]) if page.data else None

    # --- webhooks -----------------------------------------------------------
    def parse_webhook(self, body: bytes, headers: Mapping) -> GatewayEvent:
        """Verify `Stripe-Signature` with the SDK against every configured secret.

        `WebhookSignature.verify_header` checks every `v1` signature in the header
        with the SDK's default 300 s tolerance. Raises TiffinError(PAYMENT_SIGNATURE_INVALID |
        WEBHOOK_PAYLOAD_INVALID | WEBHOOK_LIVEMODE_MISMATCH).
        """
        header = headers.get(SIGNATURE_HEADER) or ""
        # Not construct_event: its event builder fails with an AttributeError (a 500) on a
        # signed body that is JSON but not an object; we parse the verified body ourselves.
        if not any(_signed_with(body, header, secret) for secret in webhook_secrets(self.config)):
            raise TiffinError("PAYMENT_SIGNATURE_INVALID", "stripe webhook signature mismatch")
        payload = webhook_json_object(body, "stripe")
        try:
            event_id, event_type = str(payload["id"]), str(payload["type"])
            if not isinstance(payload["data"]["object"], dict):
                raise TypeError("data.object is not an object")
            created = ts(payload.get("created"))
        except (ValueError, KeyError, TypeError) as exc:
            raise TiffinError("WEBHOOK_PAYLOAD_INVALID", f"stripe body: {exc}") from exc
        livemode = bool(payload.get("livemode"))
        expected = key_is_live(self.config["STRIPE_SECRET_KEY"])
        if expected is not None and livemode != expected:
            raise TiffinError("WEBHOOK_LIVEMODE_MISMATCH",
                              f"event {event_id} livemode={livemode}, key live={expected}")
        return GatewayEvent(event_id=event_id, event_type=event_type, payload=payload,
                            created_at=created, livemode=livemode)

    # --- remote subscription state -----------------------------------------
    def fetch_subscription(self, subscription_id: str) -> RemoteSubscription:
        """Re-fetch a subscription's current state (status, period, cancel flag, price).

        Raises TiffinError(GATEWAY_UNAVAILABLE) when Stripe cannot be reached or
        does not know it; callers fall back to the event's own data.
        """
        try:
            data = self.client.v1.subscriptions.retrieve(subscription_id)
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe subscription {subscription_id}: {exc}"
                              ) from exc
        return remote_subscription_from(_as_dict(data))

    def subscription_for_order(self, order, *, known_id: str | None = None
                               ) -> RemoteSubscription | None:
        """The subscription a plan order's Checkout Session created: the session
        retrieved with its subscription expanded (one request), or the recorded id fetched."""
        if known_id:
            return self.fetch_subscription(known_id)
        try:
            session = _as_dict(self.client.v1.checkout.sessions.retrieve(
                order.gateway_order_id, {"expand": ["subscription"]}))
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE",
                              f"stripe session {order.gateway_order_id}: {exc}") from exc
        subscription = session.get("subscription")
        if not subscription:
            return None
        if isinstance(subscription, str):  # a server that does not expand
            return self.fetch_subscription(subscription)
        return remote_subscription_from(subscription)

    def subscription_from_data(self, data: Mapping) -> RemoteSubscription:
        """A Subscription object carried in an event, for when Stripe cannot be asked."""
        return remote_subscription_from(data)

    def invoice_for_payment_intent(self, payment_intent_id: str) -> str | None:
        """The invoice a PaymentIntent paid (basil: Charges no longer name their invoice)."""
        try:
            page = self.client.v1.invoice_payments.list(
                {"payment": {"type": "payment_intent", "payment_intent": payment_intent_id},
                 "limit": 1})
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe invoice of {payment_intent_id}: {exc}"
                              ) from exc
        return _id(page.data[0]["invoice"]) if page.data else None

    # --- refunds ------------------------------------------------------------
    def refund_payment(self, *, gateway_payment_id: str, amount_minor: int, idempotency_key: str,
                       notes: dict | None = None) -> dict:
        """Refund `amount_minor` of a payment we recorded (a PaymentIntent, or the invoice
        of a plan's payment); returns {"id", "status", "amount"} with Stripe's
        "succeeded" as "processed", like the other gateways.

        Sends `Idempotency-Key`, so a repeated call with the same key refunds once.
        Raises TiffinError GATEWAY_UNAVAILABLE when Stripe refuses or is unreachable.
        """
        try:
            payment_intent = (self._payment_intent_of_invoice(gateway_payment_id)
                              if gateway_payment_id.startswith("in_") else gateway_payment_id)
            refund = self.client.v1.refunds.create(
                {"payment_intent": payment_intent, "amount": amount_minor,
                 "metadata": {k: str(v) for k, v in (notes or {}).items()}},
                {"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE",
                              f"stripe refund of {gateway_payment_id} failed: {exc}") from exc
        if refund.status in ("failed", "canceled"):
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe refund {refund.id} of "
                              f"{gateway_payment_id} is {refund.status}")
        return {"id": refund.id, "amount": refund.amount,
                "status": "processed" if refund.status == "succeeded" else refund.status}

    def _payment_intent_of_invoice(self, invoice_id: str) -> str:
        page = self.client.v1.invoice_payments.list({"invoice": invoice_id, "limit": 1})
        if not page.data:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe invoice {invoice_id} has no payment")
        return _id(page.data[0]["payment"]["payment_intent"])

    # --- account actions ----------------------------------------------------
    def _update(self, subscription, params: dict, action: str):
        try:
            return self.client.v1.subscriptions.update(subscription.gateway_subscription_id, params)
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe {action} "
                              f"{subscription.gateway_subscription_id}: {exc}") from exc

    def cancel_subscription_at_period_end(self, subscription) -> None:
        self._update(subscription, {"cancel_at_period_end": True}, "cancel at period end")

    def resume_subscription(self, subscription) -> None:
        self._update(subscription, {"cancel_at_period_end": False}, "resume")

    def _price_and_remote(self, subscription, new_plan) -> tuple[str, dict]:
        """The new plan's Stripe price and the subscription as Stripe holds it now."""
        price_id = self.price_id_for(new_plan)
        if not price_id:
            raise TiffinError("PLAN_NOT_FOUND", f"plan {new_plan.slug} has no Stripe price; "
                              "run `flask stripe sync-prices`")
        try:
            remote = self.client.v1.subscriptions.retrieve(subscription.gateway_subscription_id)
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe subscription "
                              f"{subscription.gateway_subscription_id}: {exc}") from exc
        return price_id, _as_dict(remote)

    def quote_plan_change(self, subscription, new_plan, *, proration_date: int | None = None
                          ) -> PlanChangeQuote:
        """Stripe's own proration preview (`POST /v1/invoices/create_preview`) of
        swapping the price at `proration_date` (default: now).

        The prorations are the preview's lines whose
        `parent.subscription_item_details.proration` is true; Stripe bills them on
        the next invoice, at the period end. Pass the same `proration_date` to
        `change_subscription_plan` so the charge matches this preview.
        Raises TiffinError(PLAN_NOT_FOUND | GATEWAY_UNAVAILABLE).
        """
        price_id, remote = self._price_and_remote(subscription, new_plan)
        item = remote["items"]["data"][0]
        proration_date = proration_date or int(datetime.now(timezone.utc).timestamp())
        try:
            invoice = _as_dict(self.client.v1.invoices.create_preview({
                "subscription": subscription.gateway_subscription_id,
                "subscription_details": {"items": [{"id": item["id"], "price": price_id}],
                                         "proration_behavior": "create_prorations",
                                         "proration_date": proration_date}}))
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe proration preview "
                              f"{subscription.gateway_subscription_id}: {exc}") from exc
        lines = (invoice.get("lines") or {}).get("data") or []
        prorations = sum(int(line.get("amount") or 0) for line in lines if _is_proration(line))
        period_end = item.get("current_period_end") or remote.get("current_period_end")
        total = invoice.get("amount_due")
        return PlanChangeQuote(
            timing=CHANGE_NOW, currency=(invoice.get("currency") or new_plan.currency).upper(),
            next_invoice_minor=prorations,
            next_invoice_total_minor=int(total) if total is not None else None,
            next_invoice_at=ts(invoice.get("next_payment_attempt")) or ts(period_end),
            proration_date=proration_date)

    def change_subscription_plan(self, subscription, new_plan, *,
                                 proration_date: int | None = None) -> None:
        """Swap the subscription's price; Stripe prorates the difference onto the
        next invoice, at `proration_date` when given (the preview's instant)."""
        price_id, remote = self._price_and_remote(subscription, new_plan)
        params = {"items": [{"id": remote["items"]["data"][0]["id"], "price": price_id}],
                  "proration_behavior": "create_prorations",
                  "metadata": {"plan_id": str(new_plan.id)}}
        if proration_date:
            params["proration_date"] = proration_date
        self._update(subscription, params, "change plan")

    def cancel_subscription_now(self, subscription) -> None:
        try:
            self.client.v1.subscriptions.cancel(subscription.gateway_subscription_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return  # already gone at Stripe: nothing left to cancel
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe cancel "
                              f"{subscription.gateway_subscription_id}: {exc}") from exc
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe cancel "
                              f"{subscription.gateway_subscription_id}: {exc}") from exc

    # --- catalogue ----------------------------------------------------------
    def ensure_price(self, plan) -> str:
        """Look up (by lookup_key) or create the Product and Price for a plan; returns the price id.

        The lookup key includes amount, currency and interval, so a price change
        creates a new Price rather than reusing a stale one.
        """
        interval = plan.billing_interval or "month"
        lookup_key = (f"tiffin-{plan.slug}-{plan.price_minor}-{plan.currency.lower()}"
                      + (f"-{plan.interval_count}{interval}" if plan.is_recurring else "-once"))
        try:
            found = self.client.v1.prices.list({"lookup_keys": [lookup_key], "limit": 1})
            if found.data:
                return found.data[0].id
            product_id = f"tiffin-{plan.slug}"
            try:
                self.client.v1.products.retrieve(product_id)
            except stripe.InvalidRequestError as exc:
                if exc.http_status != 404:
                    raise
                self.client.v1.products.create({"id": product_id, "name": plan.name,
                                                 "metadata": {"plan_slug": plan.slug}})
            params = {"product": product_id, "unit_amount": plan.price_minor,
                      "currency": plan.currency.lower(), "lookup_key": lookup_key,
                      "metadata": {"plan_slug": plan.slug}}
            if plan.is_recurring:
                params["recurring"] = {"interval": interval, "interval_count": plan.interval_count}
            price = self.client.v1.prices.create(params, {"idempotency_key": f"tiffin-{lookup_key}"})
            return price.id
        except stripe.StripeError as exc:
            raise TiffinError("GATEWAY_UNAVAILABLE", f"stripe price for {plan.slug}: {exc}") from exc
