"""Account actions on a subscription: cancel at period end, resume, change plan.

The gateway changes its remote subscription first (so we never show a change
the gateway did not accept); then the local rows change in one transaction.
"""
from __future__ import annotations

import sqlalchemy as sa

from app.errors import TiffinError
from app.extensions import db
from app.gateways import get_gateway
from app.models import MealPlan, Subscription, User
from app.models.types import utcnow
from app.services import audit, credits, notifications
from app.services.fulfilment import live_subscription, lock_user


def current_subscription(user: User) -> Subscription | None:
    """The live subscription, else the most recent one (for the account page)."""
    live = live_subscription(user.id)
    if live is not None:
        return live
    return db.session.scalars(sa.select(Subscription).where(Subscription.user_id == user.id)
                              .order_by(Subscription.id.desc())).first()


def _require_live(user: User) -> Subscription:
    lock_user(user.id)
    subscription = live_subscription(user.id, for_update=True)
    if subscription is None:
        raise TiffinError("ORDER_NOT_FOUND", f"user {user.id} has no live subscription")
    return subscription


def cancel_at_period_end(user: User) -> Subscription:
    subscription = _require_live(user)
    get_gateway(subscription.gateway).cancel_subscription_at_period_end(subscription)
    subscription.cancel_at_period_end = True
    subscription.canceled_at = utcnow()
    audit.record(f"user:{user.id}", "subscription_cancel_requested", "subscription",
                 subscription.id, user_id=user.id,
                 period_end=subscription.current_period_end.isoformat())
    notifications.enqueue(user, "cancellation", f"cancellation:{subscription.id}:"
                          f"{int(subscription.canceled_at.timestamp())}", subscription=subscription)
    db.session.commit()
    return subscription


def resume(user: User) -> Subscription:
    subscription = _require_live(user)
    if not subscription.cancel_at_period_end:
        db.session.rollback()
        return subscription
    get_gateway(subscription.gateway).resume_subscription(subscription)
    subscription.cancel_at_period_end = False
    subscription.canceled_at = None
    audit.record(f"user:{user.id}", "subscription_resumed", "subscription", subscription.id,
                 user_id=user.id)
    db.session.commit()
    return subscription


def apply_plan_change(subscription: Subscription, new_plan: MealPlan, *, actor: str,
                      source_key: str) -> None:
    """Switch plans and reset plan credits to the new plan, minus meals already
    used this period (capped at zero on a downgrade, never negative)."""
    old_plan = subscription.meal_plan
    user = db.session.get(User, subscription.user_id)
    used = max(old_plan.meals_per_period - user.plan_meal_credits, 0)
    subscription.meal_plan_id = new_plan.id
    credits.reset_plan_credits(user.id, max(new_plan.meals_per_period - used, 0),
                               reason="plan_change", source_key=source_key,
                               subscription_id=subscription.id)
    audit.record(actor, "subscription_plan_changed", "subscription", subscription.id,
                 user_id=user.id, old_plan=old_plan.slug, new_plan=new_plan.slug,
                 meals_used=used)


def change_plan(user: User, new_plan_slug: str) -> Subscription:
    from app.services.checkout import get_plan

    new_plan = get_plan(new_plan_slug)
    if not new_plan.is_recurring:
        raise TiffinError("PLAN_NOT_FOUND", f"{new_plan_slug} is not a recurring plan")
    subscription = _require_live(user)
    if subscription.meal_plan_id == new_plan.id:
        db.session.rollback()
        return subscription
    get_gateway(subscription.gateway).change_subscription_plan(subscription, new_plan)
    apply_plan_change(subscription, new_plan, actor=f"user:{user.id}",
                      source_key=f"plan_change:{subscription.id}:{utcnow().isoformat()}")
    db.session.commit()
    return subscription
