"""Handlers for Razorpay webhook events: one function per event type.

Each translates the event into one call of app.services.razorpay_sync (which
uses the shared fulfilment and lifecycle services), so a replayed event is
harmless. Payload shapes: https://razorpay.com/docs/webhooks/payloads/
"""
from __future__ import annotations

from app.models.webhook import EVENT_IGNORED, EVENT_PROCESSED
from app.services import razorpay_sync as sync


def _entity(event, name: str) -> dict | None:
    return ((event.payload.get("payload") or {}).get(name) or {}).get("entity")


def payment_captured(event) -> str:
    """A payment was captured: fulfil its order (subscription charges: subscription.charged)."""
    return _with_payment(event, sync.fulfil_order_payment)


def order_paid(event) -> str:
    """An order is fully paid: the same fulfilment, from the payment it carries."""
    return _with_payment(event, sync.fulfil_order_payment)


def payment_authorized(event) -> str:
    """Authorised, not captured (auto-capture off): note it, then capture it."""
    return _with_payment(event, sync.record_authorization)


def payment_failed(event) -> str:
    """A pending order failed; Razorpay's error_description is kept for the shopper."""
    return _with_payment(event, sync.record_payment_failure)


def _with_payment(event, action) -> str:
    payment = _entity(event, "payment")
    if payment is None:
        return EVENT_IGNORED
    action(payment)
    return EVENT_PROCESSED


def refund_processed(event) -> str:
    """A refund went through: record the cumulative amount (a full refund revokes access)."""
    sync.record_refund_event(_entity(event, "refund"), _entity(event, "payment"))
    return EVENT_PROCESSED


def dispute_created(event) -> str:
    """A chargeback was opened: the order is disputed and access revoked at once."""
    sync.record_dispute_event(_entity(event, "dispute"), _entity(event, "payment"))
    return EVENT_PROCESSED


def subscription_charged(event) -> str:
    """A subscription payment: the activation (once) or a renewal with fresh meal credits."""
    sync.apply_subscription_charge(_entity(event, "subscription"), _entity(event, "payment"),
                                   event_at=event.gateway_created_at)
    return EVENT_PROCESSED


def subscription_state(event) -> str:
    """pending (grace), halted (no access), cancelled, completed."""
    sync.apply_subscription_state(_entity(event, "subscription"), event.event_type,
                                  event_at=event.gateway_created_at)
    return EVENT_PROCESSED


HANDLERS = {
    "payment.captured": payment_captured,
    "order.paid": order_paid,
    "payment.authorized": payment_authorized,
    "payment.failed": payment_failed,
    "refund.processed": refund_processed,
    "payment.dispute.created": dispute_created,
    "subscription.charged": subscription_charged,
    "subscription.pending": subscription_state,
    "subscription.halted": subscription_state,
    "subscription.cancelled": subscription_state,
    "subscription.completed": subscription_state,
}
