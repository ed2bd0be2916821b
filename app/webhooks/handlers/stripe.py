"""Handlers for Stripe events: one small function per type, registered in HANDLERS.

Each translates Stripe's object into a call on the gateway-neutral services, so
a replayed or reordered event is harmless. A handler that raises marks the
event failed and the retry command runs it again later (e.g. a renewal whose
subscription we have not recorded yet).
"""
from __future__ import annotations

import logging

from app.errors import TiffinError
from app.gateways import get_gateway
from app.gateways.base import PAID, PaymentResult
from app.gateways.stripe import invoice_period, subscription_id_of_invoice
from app.models.subscription import SUB_CANCELED
from app.models.types import utcnow
from app.models.webhook import EVENT_IGNORED, EVENT_PROCESSED
from app.services import lifecycle, stripe_sync, unmatched
from app.services.checkout import mark_order_failed
from app.services.fulfilment import _create_subscription_and_order, find_order, payer

log = logging.getLogger("tiffin.webhooks.stripe")
ACTOR = "webhook:stripe"
GATEWAY = "stripe"


def _object(event) -> dict:
    return event.payload["data"]["object"]


def _gateway():
    return get_gateway(GATEWAY)


def _period(subscription_id: str | None, fallback=(None, None)):
    """The subscription's current period from Stripe, else `fallback`."""
    if not subscription_id:
        return fallback
    try:
        remote = _gateway().fetch_subscription(subscription_id)
        return remote.period_start, remote.period_end
    except TiffinError:
        return fallback


def fulfil_session(result: PaymentResult, event) -> str:
    """Fulfil a paid Checkout Session through the one helper (keyed on the session id)."""
    if result.status != PAID:
        return EVENT_PROCESSED  # an async payment still processing: its own event follows
    found = payer(GATEWAY, result.gateway_order_id)  # the stored order's owner and plan
    if found is None:
        # Paid at Stripe, but no order of ours: held for review, nothing granted.
        unmatched.hold_payment(GATEWAY, result.gateway_order_id, result.gateway_payment_id,
                               result.amount_minor, result.currency,
                               user_id=result.metadata_user_id, plan_id=result.metadata_plan_id,
                               event=event, actor=ACTOR)
        return EVENT_PROCESSED
    user, plan = found
    user_id = user.id
    period_start, period_end = _period(result.gateway_subscription_id)
    try:
        _create_subscription_and_order(
            user, plan, GATEWAY, result.gateway_order_id, result.gateway_payment_id,
            result.amount_minor or 0, result.currency or "", actor=ACTOR,
            metadata_user_id=result.metadata_user_id,
            gateway_customer_id=result.gateway_customer_id,
            gateway_subscription_id=result.gateway_subscription_id,
            period_start=period_start, period_end=period_end)
    except TiffinError as exc:
        # Refused and recorded (order in needs_review); retrying cannot help.
        log.warning("stripe session %s refused: %s", result.gateway_order_id, exc.code)
        return EVENT_PROCESSED
    stripe_sync.remember_customer(user_id, result.gateway_customer_id)
    return EVENT_PROCESSED


def checkout_session_completed(event) -> str:
    return fulfil_session(_gateway().session_result(_object(event)), event)


def checkout_session_async_payment_succeeded(event) -> str:
    return fulfil_session(_gateway().session_result(_object(event)), event)


def checkout_session_async_payment_failed(event) -> str:
    order = find_order(GATEWAY, _object(event)["id"])
    if order is None:
        return EVENT_IGNORED
    mark_order_failed(order, "async_payment_failed", "Your bank did not complete the payment.",
                      actor=ACTOR)
    return EVENT_PROCESSED


def _local_subscription(subscription_id: str | None, invoice: dict | None = None):
    """Our subscription for a Stripe one. For a renewal invoice we should know it:
    raise so the event is retried once the checkout has been fulfilled."""
    local = lifecycle.find_subscription(GATEWAY, subscription_id) if subscription_id else None
    if local is None and invoice is not None and invoice.get("billing_reason") != "subscription_create":
        raise LookupError(f"no local subscription for stripe {subscription_id} yet")
    return local


def invoice_paid(event) -> str:
    invoice = _object(event)
    subscription_id = subscription_id_of_invoice(invoice)
    if not subscription_id:
        return EVENT_IGNORED  # a one-off invoice, not a subscription's
    local = _local_subscription(subscription_id, invoice)
    if invoice.get("billing_reason") == "subscription_create":
        if local is not None:
            return EVENT_PROCESSED  # the checkout fulfilment granted this period's credits
        # The first invoice beat checkout.session.completed: fulfil from the session,
        # keyed on the session id like every other path, so there is still one grant.
        result = _gateway().find_session_for_subscription(subscription_id)
        return fulfil_session(result, event) if result is not None else EVENT_IGNORED
    period_start, period_end = _period(subscription_id, invoice_period(invoice))
    try:
        lifecycle.record_renewal(
            local, gateway_order_id=invoice["id"], gateway_payment_id=invoice["id"],
            amount_minor=int(invoice["amount_paid"]), currency=invoice["currency"].upper(),
            period_start=period_start, period_end=period_end, actor=ACTOR)
    except TiffinError as exc:
        log.warning("stripe renewal %s refused: %s", invoice["id"], exc.code)
        return EVENT_PROCESSED
    stripe_sync.mark_event_applied(local, event.gateway_created_at)
    return EVENT_PROCESSED


def invoice_payment_failed(event) -> str:
    invoice = _object(event)
    local = _local_subscription(subscription_id_of_invoice(invoice), invoice)
    if local is None:
        return EVENT_IGNORED  # a first payment failing inside Checkout: the shopper saw it there
    lifecycle.mark_past_due(local, event_at=event.gateway_created_at, actor=ACTOR,
                            dedupe_key=f"stripe:payment_failed:{invoice['id']}:"
                                       f"{invoice.get('attempt_count') or 0}",
                            hosted_invoice_url=invoice.get("hosted_invoice_url"))
    return EVENT_PROCESSED


def invoice_payment_action_required(event) -> str:
    invoice = _object(event)
    local = _local_subscription(subscription_id_of_invoice(invoice), invoice)
    if local is None or not invoice.get("hosted_invoice_url"):
        return EVENT_IGNORED
    lifecycle.notify_action_required(local, hosted_invoice_url=invoice["hosted_invoice_url"],
                                     dedupe_key=f"stripe:action_required:{invoice['id']}",
                                     actor=ACTOR)
    return EVENT_PROCESSED


def customer_subscription_updated(event) -> str:
    data = _object(event)
    local = lifecycle.find_subscription(GATEWAY, data["id"])
    if local is None:
        return EVENT_IGNORED
    try:
        # Like dj-stripe and Pay: Stripe's current state, as of now, whatever this event says.
        remote, event_at = _gateway().fetch_subscription(data["id"]), utcnow()
    except TiffinError:
        remote, event_at = _gateway().subscription_from_data(data), event.gateway_created_at
    stripe_sync.sync_subscription(local, remote, event_at=event_at, actor=ACTOR,
                                  source_key=f"stripe:plan_change:{event.event_id}")
    return EVENT_PROCESSED


def customer_subscription_deleted(event) -> str:
    local = lifecycle.find_subscription(GATEWAY, _object(event)["id"])
    if local is None:
        return EVENT_IGNORED
    lifecycle.end_subscription(local, status=SUB_CANCELED, actor=ACTOR,
                               event_at=event.gateway_created_at)
    return EVENT_PROCESSED


def _order_for_payment(payment_intent_id: str | None, invoice_id: str | None):
    """A charge or dispute's order: a one-time payment by PaymentIntent, a
    subscription payment by its invoice (asked of Stripe when not in the event)."""
    order = stripe_sync.find_order_by_payment(payment_intent_id)
    if order is None and invoice_id is None and payment_intent_id:
        invoice_id = _gateway().invoice_for_payment_intent(payment_intent_id)
    return order or stripe_sync.find_order_by_payment(invoice_id)


def _id(value):
    return value.get("id") if isinstance(value, dict) else value


def charge_refunded(event) -> str:
    charge = _object(event)
    order = _order_for_payment(_id(charge.get("payment_intent")), _id(charge.get("invoice")))
    if order is None:
        return EVENT_IGNORED
    refunds = (charge.get("refunds") or {}).get("data") or []
    lifecycle.record_refund(order, refunded_total_minor=int(charge["amount_refunded"]),
                            refund_id=refunds[0]["id"] if refunds else charge["id"], actor=ACTOR)
    return EVENT_PROCESSED


def charge_dispute_created(event) -> str:
    dispute = _object(event)
    order = _order_for_payment(_id(dispute.get("payment_intent")), None)
    if order is None:
        return EVENT_IGNORED
    lifecycle.record_dispute(order, dispute_id=dispute["id"], actor=ACTOR)
    return EVENT_PROCESSED


def customer_deleted(event) -> str:
    stripe_sync.customer_deleted(_object(event)["id"], actor=ACTOR,
                                 event_at=event.gateway_created_at)
    return EVENT_PROCESSED


HANDLERS = {
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_async_payment_succeeded,
    "checkout.session.async_payment_failed": checkout_session_async_payment_failed,
    "invoice.paid": invoice_paid,
    "invoice.payment_failed": invoice_payment_failed,
    "invoice.payment_action_required": invoice_payment_action_required,
    "customer.subscription.updated": customer_subscription_updated,
    "customer.subscription.deleted": customer_subscription_deleted,
    "charge.refunded": charge_refunded,
    "charge.dispute.created": charge_dispute_created,
    "customer.deleted": customer_deleted,
}
