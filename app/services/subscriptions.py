"""Account actions on a subscription: cancel at period end, resume; the plan switch
that every plan change ends in (the change itself: app.services.plan_changes).

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


def require_live(user: User) -> Subscription:
    """Lock the user, then their live subscription; ORDER_NOT_FOUND without one."""
    lock_user(user.id)
    subscription = live_subscription(user.id, for_update=True)
    if subscription is None:
        raise TiffinError("ORDER_NOT_FOUND", f"user {user.id} has no live subscription")
    return subscription


def cancel_at_period_end(user: User) -> Subscription:
    subscription = require_live(user)
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
    subscription = require_live(user)
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
                      source_key: str, plan_credits: int | None = None,
                      order_id: int | None = None) -> int:
    """Switch plans and reset plan credits to the new plan, minus meals already
    used this period (capped at zero on a downgrade, never negative).

    A caller holding the user's row lock passes the plan balance it read under
    it as `plan_credits`. Returns the plan credits after the change.
    """
    old_plan = subscription.meal_plan
    locked_balance = plan_credits
    if plan_credits is None:
        plan_credits = db.session.get(User, subscription.user_id).plan_meal_credits
    used = max(old_plan.meals_per_period - plan_credits, 0)
    credits_after = max(new_plan.meals_per_period - used, 0)
    subscription.meal_plan = new_plan
    subscription.scheduled_meal_plan_id = None
    credits.reset_plan_credits(subscription.user_id, credits_after, reason="plan_change",
                               source_key=source_key, subscription_id=subscription.id,
                               order_id=order_id, balance_before=locked_balance)
    audit.record(actor, "subscription_plan_changed", "subscription", subscription.id,
                 user_id=subscription.user_id, old_plan=old_plan.slug, new_plan=new_plan.slug,
                 meals_used=used, order_id=order_id)
    return credits_after
