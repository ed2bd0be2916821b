"""What happens to a subscription after its first payment, whatever the gateway.

Gateway webhook handlers translate their events into these calls. Each function
is one use case and one transaction, and each is safe to repeat: replaying an
event leaves the same state. Renewals are payments, so they go through
`_create_subscription_and_order` like every other payment.

Ordering: gateways deliver out of order. Every state write carries the gateway
timestamp of the event that caused it (`event_at`); a write older than the
subscription's `last_gateway_event_at` is skipped.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import Order, Subscription, User
from app.models.order import ORDER_DISPUTED, ORDER_PARTIALLY_REFUNDED, ORDER_REFUNDED
from app.models.subscription import (LIVE_STATUSES, SUB_CANCELED, SUB_PAST_DUE, SUB_REVOKED)
from app.models.types import utcnow
from app.money import format_money
from app.services import audit, credits, notifications
from app.services.fulfilment import FulfilmentResult, _create_subscription_and_order, lock_user

log = logging.getLogger("tiffin.lifecycle")


def find_subscription(gateway: str, gateway_subscription_id: str, *, for_update: bool = False
                      ) -> Subscription | None:
    query = sa.select(Subscription).where(Subscription.gateway == gateway,
                                          Subscription.gateway_subscription_id == gateway_subscription_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return db.session.scalars(query).first()


def _lock(subscription: Subscription) -> Subscription:
    """Lock the subscription's user, then the subscription (see fulfilment.lock_user)."""
    lock_user(subscription.user_id)
    return db.session.scalars(sa.select(Subscription).where(Subscription.id == subscription.id)
                              .with_for_update().execution_options(populate_existing=True)).one()


def is_stale(subscription: Subscription, event_at: datetime | None) -> bool:
    """True when a newer event has already been applied to this subscription."""
    last = subscription.last_gateway_event_at
    return event_at is not None and last is not None and event_at < last


def _mark_applied(subscription: Subscription, event_at: datetime | None) -> None:
    if event_at is not None and (subscription.last_gateway_event_at is None
                                 or event_at > subscription.last_gateway_event_at):
        subscription.last_gateway_event_at = event_at


def sync_user_status(user_id: int) -> str:
    """Copy the status of the user's live (else latest) subscription onto the user."""
    subs = db.session.scalars(sa.select(Subscription).where(Subscription.user_id == user_id)
                              .order_by(Subscription.id.desc())).all()
    live = next((s for s in subs if s.status in LIVE_STATUSES), None)
    status = (live or (subs[0] if subs else None)).status if subs else "none"
    db.session.execute(sa.update(User).where(User.id == user_id).values(subscription_status=status)
                       .execution_options(synchronize_session="fetch"))
    return status


def record_renewal(subscription: Subscription, *, gateway_order_id: str,
                   gateway_payment_id: str | None, amount_minor: int, currency: str,
                   period_start: datetime | None, period_end: datetime | None,
                   actor: str) -> FulfilmentResult:
    """A renewal payment: a new paid order, the period extended, status back to
    active, plan credits reset — through the one fulfilment helper, keyed on the
    gateway's id for this renewal (invoice id, payment id). A plan change
    scheduled for the cycle end (Razorpay) takes effect with it."""
    user = db.session.get(User, subscription.user_id)
    return _create_subscription_and_order(
        user, subscription.scheduled_meal_plan or subscription.meal_plan, subscription.gateway, gateway_order_id, gateway_payment_id,
        amount_minor, currency, actor=actor, gateway_subscription_id=subscription.gateway_subscription_id,
        period_start=period_start, period_end=period_end)


def apply_remote_state(subscription: Subscription, *, status: str, event_at: datetime | None,
                       actor: str, period_start: datetime | None = None,
                       period_end: datetime | None = None,
                       cancel_at_period_end: bool | None = None) -> bool:
    """Write the gateway's view of a subscription unless a newer one was applied.

    Returns False when skipped as stale. Moving into past_due starts the grace
    period; leaving it clears it.
    """
    subscription = _lock(subscription)
    if is_stale(subscription, event_at) or subscription.status == SUB_REVOKED:
        db.session.rollback()
        return False
    previous = subscription.status
    if status == SUB_PAST_DUE and previous != SUB_PAST_DUE:
        _start_grace(subscription)
    elif status != SUB_PAST_DUE:
        subscription.grace_period_ends_at = None
    if status == SUB_CANCELED and subscription.canceled_at is None:
        subscription.canceled_at = utcnow()
    subscription.status = status
    if period_start is not None:
        subscription.current_period_start = period_start
    if period_end is not None:
        subscription.current_period_end = period_end
    if cancel_at_period_end is not None:
        subscription.cancel_at_period_end = cancel_at_period_end
    _mark_applied(subscription, event_at)
    sync_user_status(subscription.user_id)
    if previous != status:
        audit.record(actor, "subscription_status_changed", "subscription", subscription.id,
                     user_id=subscription.user_id, old=previous, new=status)
    db.session.commit()
    return True


def _start_grace(subscription: Subscription) -> None:
    days = current_app.config["GRACE_PERIOD_DAYS"]
    subscription.grace_period_ends_at = utcnow() + timedelta(days=days)


def mark_past_due(subscription: Subscription, *, event_at: datetime | None, actor: str,
                  dedupe_key: str, hosted_invoice_url: str | None = None) -> bool:
    """A renewal payment failed: past_due with a grace period of continued access,
    and one email telling the shopper until when."""
    subscription = _lock(subscription)
    if is_stale(subscription, event_at) or subscription.status not in LIVE_STATUSES:
        db.session.rollback()
        return False
    if subscription.status != SUB_PAST_DUE:
        _start_grace(subscription)
        audit.record(actor, "subscription_past_due", "subscription", subscription.id,
                     user_id=subscription.user_id,
                     grace_period_ends_at=subscription.grace_period_ends_at.isoformat())
    subscription.status = SUB_PAST_DUE
    _mark_applied(subscription, event_at)
    sync_user_status(subscription.user_id)
    user = db.session.get(User, subscription.user_id)
    notifications.enqueue(user, "payment_failed", dedupe_key, subscription=subscription,
                          grace_period_ends_at=subscription.grace_period_ends_at,
                          hosted_invoice_url=hosted_invoice_url)
    db.session.commit()
    return True


def notify_action_required(subscription: Subscription, *, hosted_invoice_url: str,
                           dedupe_key: str, actor: str) -> None:
    """3-D Secure needed for a renewal: email the shopper the hosted invoice link."""
    user = db.session.get(User, subscription.user_id)
    notifications.enqueue(user, "action_required", dedupe_key, subscription=subscription,
                          hosted_invoice_url=hosted_invoice_url)
    audit.record(actor, "payment_action_required", "subscription", subscription.id,
                 user_id=user.id)
    db.session.commit()


def revoke_access(subscription: Subscription, *, reason: str, actor: str,
                  event_at: datetime | None = None) -> bool:
    """Take access away at once (full refund, dispute, deleted customer).
    Revocation is final: no later (or replayed older) event restores it."""
    subscription = _lock(subscription)
    if subscription.status == SUB_REVOKED:
        db.session.rollback()
        return False
    previous = subscription.status
    subscription.status = SUB_REVOKED
    subscription.access_revoked_at = utcnow()
    subscription.revoke_reason = reason
    subscription.grace_period_ends_at = None
    _mark_applied(subscription, event_at)
    credits.revoke_plan_credits(subscription.user_id, reason=f"revoked:{reason}",
                                source_key=f"revoke:{subscription.id}",
                                subscription_id=subscription.id)
    sync_user_status(subscription.user_id)
    audit.record(actor, "access_revoked", "subscription", subscription.id,
                 user_id=subscription.user_id, reason=reason, previous_status=previous)
    db.session.commit()
    return True


def end_subscription(subscription: Subscription, *, status: str, actor: str,
                     event_at: datetime | None = None) -> bool:
    """The gateway ended the subscription (deleted, cancelled, completed)."""
    return apply_remote_state(subscription, status=status, event_at=event_at, actor=actor)


def _lock_order(order: Order) -> Order:
    lock_user(order.user_id)
    return db.session.scalars(sa.select(Order).where(Order.id == order.id).with_for_update()
                              .execution_options(populate_existing=True)).one()


def _subscription_started_by(order: Order) -> Subscription | None:
    """The subscription whose access this order paid for (its own or, for a renewal, its parent's)."""
    if order.subscription is not None:
        return order.subscription
    if order.parent_order_id is not None:
        return db.session.scalars(sa.select(Subscription).where(
            Subscription.order_id == order.parent_order_id)).first()
    return None


def record_refund(order: Order, *, refunded_total_minor: int, refund_id: str, actor: str) -> str:
    """Record the gateway's cumulative refunded amount for an order.

    A full refund revokes the access the order paid for; a partial one is
    recorded and access stays. Returns the order's new status.
    """
    order = _lock_order(order)
    if refunded_total_minor <= order.refunded_minor and order.status in (
            ORDER_REFUNDED, ORDER_PARTIALLY_REFUNDED):
        db.session.rollback()
        return order.status  # a replay or an older refund event
    order.refunded_minor = min(max(refunded_total_minor, order.refunded_minor), order.amount_minor)
    full = order.refunded_minor >= order.amount_minor
    order.status = ORDER_REFUNDED if full else ORDER_PARTIALLY_REFUNDED
    audit.record(actor, "order_refunded" if full else "order_partially_refunded", "order",
                 order.id, user_id=order.user_id, order_id=order.id, refund_id=refund_id,
                 refunded_minor=order.refunded_minor)
    user = db.session.get(User, order.user_id)
    subscription = _subscription_started_by(order) if full else None
    notifications.enqueue(user, "refund", f"refund:{order.id}:{order.refunded_minor}", order=order,
                          refunded_display=format_money(order.refunded_minor, order.currency),
                          access_revoked=subscription is not None)
    db.session.commit()
    if subscription is not None:
        revoke_access(subscription, reason="refunded", actor=actor)
    return order.status


def record_dispute(order: Order, *, dispute_id: str, actor: str) -> bool:
    """A chargeback was opened: mark the order and revoke access at once."""
    order = _lock_order(order)
    if order.status == ORDER_DISPUTED:
        db.session.rollback()
        return False
    order.status = ORDER_DISPUTED
    audit.record(actor, "order_disputed", "order", order.id, user_id=order.user_id,
                 order_id=order.id, dispute_id=dispute_id)
    user = db.session.get(User, order.user_id)
    notifications.enqueue(user, "dispute", f"dispute:{dispute_id}", order=order)
    subscription = _subscription_started_by(order)
    db.session.commit()
    if subscription is not None:
        revoke_access(subscription, reason="disputed", actor=actor)
    return True
