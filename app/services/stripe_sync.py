"""Stripe-specific glue between Stripe's ids and our rows (no SDK here).

Mapping Stripe prices, payments and customers to our plans, orders and users;
applying a subscription's remote state (plan change + status) in order; the
`customer.deleted` clean-up; storing price ids for the catalogue.
"""
from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.gateways.stripe import price_id_overrides  # a pure STRIPE_PRICE_IDS parser
from app.models import MealPlan, Order, Subscription, User
from app.models.subscription import SUB_REVOKED
from app.services import audit, lifecycle
from app.services.subscriptions import apply_plan_change

log = logging.getLogger("tiffin.stripe_sync")
GATEWAY = "stripe"


def plan_for_remote(price_id: str | None, metadata_plan_id: int | None) -> MealPlan | None:
    """Our plan for a Stripe price id (synced or configured), else the plan our metadata names."""
    if price_id:
        slug = {v: k for k, v in _price_overrides().items()}.get(price_id)
        query = (sa.select(MealPlan).where(MealPlan.slug == slug) if slug
                 else sa.select(MealPlan).where(MealPlan.stripe_price_id == price_id))
        plan = db.session.scalars(query).first()
        if plan is not None:
            return plan
    if metadata_plan_id is not None:
        return db.session.get(MealPlan, metadata_plan_id)
    return None


def _price_overrides() -> dict[str, str]:
    return price_id_overrides(current_app.config)


def remember_customer(user_id: int, customer_id: str | None) -> None:
    """Keep the shopper's Stripe customer id so the next checkout reuses it."""
    if not customer_id:
        return
    user = db.session.get(User, user_id)
    if user is None or user.stripe_customer_id == customer_id or user.deleted_at is not None:
        return
    if user.stripe_customer_id is None:
        user.stripe_customer_id = customer_id
        try:
            db.session.commit()
        except IntegrityError:  # another account holds this customer id; keep the first
            db.session.rollback()
            log.warning("stripe customer %s already belongs to another user (not %s)",
                        customer_id, user_id)


def find_order_by_payment(payment_key: str | None) -> Order | None:
    """The order whose payment is this PaymentIntent or invoice id."""
    if not payment_key:
        return None
    return db.session.scalars(sa.select(Order).where(
        Order.gateway == GATEWAY, Order.gateway_payment_id == payment_key)).first()


def mark_event_applied(subscription: Subscription, event_at: datetime | None) -> None:
    """Record that state from an event at `event_at` was applied (e.g. a renewal),
    so an older event arriving later does not overwrite it."""
    if event_at is None:
        return
    locked = lifecycle._lock(subscription)
    if locked.last_gateway_event_at is None or event_at > locked.last_gateway_event_at:
        locked.last_gateway_event_at = event_at
    db.session.commit()


def sync_subscription(subscription: Subscription, remote, *, event_at: datetime | None,
                      actor: str, source_key: str) -> bool:
    """Apply Stripe's view of a subscription: a plan change (credits reset to the
    new plan, used meals capped on a downgrade), then status, period and
    cancel_at_period_end. Skipped when a newer event was applied already.

    `remote` is the gateway's RemoteSubscription (re-fetched, or from the event).
    Returns False when skipped as stale.
    """
    locked = lifecycle._lock(subscription)
    if lifecycle.is_stale(locked, event_at) or locked.status == SUB_REVOKED:
        db.session.rollback()
        return False
    new_plan = plan_for_remote(remote.price_id, remote.metadata_plan_id)
    if new_plan is not None and new_plan.id != locked.meal_plan_id and new_plan.is_recurring:
        apply_plan_change(locked, new_plan, actor=actor, source_key=source_key)
        lifecycle._mark_applied(locked, event_at)
        db.session.commit()
    else:
        db.session.rollback()
    return lifecycle.apply_remote_state(
        locked, status=remote.status, event_at=event_at, actor=actor,
        period_start=remote.period_start, period_end=remote.period_end,
        cancel_at_period_end=remote.cancel_at_period_end)


def customer_deleted(customer_id: str, *, actor: str, event_at: datetime | None) -> int:
    """A Stripe customer was deleted: revoke the access their subscriptions gave,
    then clear the customer and subscription ids. Returns how many subscriptions changed."""
    users = db.session.scalars(sa.select(User).where(User.stripe_customer_id == customer_id)).all()
    subs = db.session.scalars(sa.select(Subscription).where(
        Subscription.gateway == GATEWAY, sa.or_(
            Subscription.gateway_customer_id == customer_id,
            Subscription.user_id.in_([u.id for u in users])))).all()
    for subscription in subs:
        lifecycle.revoke_access(subscription, reason="customer_deleted", actor=actor,
                                event_at=event_at)
    for subscription in subs:
        row = lifecycle._lock(subscription)
        row.gateway_subscription_id = None
        row.gateway_customer_id = None
    for user in db.session.scalars(sa.select(User).where(
            User.stripe_customer_id == customer_id)).all():
        user.stripe_customer_id = None
        audit.record(actor, "stripe_customer_deleted", "user", user.id, user_id=user.id,
                     customer_id=customer_id)
    db.session.commit()
    return len(subs)


def store_price_ids(price_ids: dict[str, str], *, actor: str) -> list[tuple[str, str]]:
    """Write each plan's Stripe price id (slug -> price id); returns what changed."""
    changed = []
    for plan in db.session.scalars(sa.select(MealPlan).where(MealPlan.slug.in_(list(price_ids)))):
        if plan.stripe_price_id != price_ids[plan.slug]:
            audit.record(actor, "stripe_price_stored", "meal_plan", plan.id,
                         old=plan.stripe_price_id, new=price_ids[plan.slug])
            plan.stripe_price_id = price_ids[plan.slug]
            changed.append((plan.slug, plan.stripe_price_id))
    db.session.commit()
    return changed


def sync_prices(gateway, *, actor: str = "cli:stripe") -> dict[str, str]:
    """Price ids for every active plan: STRIPE_PRICE_IDS first, else looked up or
    created at Stripe through the gateway; stored on the plans. Returns slug -> price id."""
    overrides = _price_overrides()
    plans = db.session.scalars(sa.select(MealPlan).where(MealPlan.is_active.is_(True))
                               .order_by(MealPlan.sort_order)).all()
    price_ids = {}
    for plan in plans:
        price_ids[plan.slug] = overrides.get(plan.slug) or gateway.ensure_price(plan)
    db.session.rollback()  # end the read transaction before the gateway calls' results are written
    store_price_ids(price_ids, actor=actor)
    return price_ids
