"""Changing a live subscription's plan: the preview, the change, and the paid difference.

What a change costs and when it applies is the gateway's to say
(`PaymentGateway.quote_plan_change`):
- Stripe applies it at once and bills the prorated difference on the next
  invoice; the preview's `proration_date` goes to the update, so the charge is
  the one the shopper saw.
- Razorpay switches plans when the current cycle ends; we keep the new plan as
  `scheduled_meal_plan_id` and the renewal that starts the next cycle applies it.
- The test gateway (the shop bills, nobody else) charges the full difference
  through its payment page first; the dearer plan's credits arrive with the
  payment, through the one fulfilment helper. A cheaper plan applies at once
  and nothing is refunded.
Every change is confirmed by email ("plan_changed"), with the amounts.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from app.errors import TiffinError
from app.extensions import db
from app.gateways import get_gateway
from app.gateways.base import (CHANGE_AFTER_PAYMENT, CHANGE_AT_CYCLE_END, CHANGE_NOW,
                               PlanChangeQuote)
from app.models import MealPlan, Order, Subscription, User
from app.models.order import ORDER_KIND_PLAN_CHANGE, ORDER_PENDING
from app.models.types import utcnow
from app.services import audit, notifications
from app.services.checkout import get_plan, open_gateway_checkout
from app.services.fulfilment import live_subscription
from app.services.subscriptions import apply_plan_change, require_live

# A preview's proration instant is honoured this long (the shopper reads the page);
# an older form is refused as FORM_EXPIRED, so the charge is never one nobody saw.
PRORATION_DATE_MAX_AGE = timedelta(minutes=30)
PRORATION_DATE_CLOCK_SKEW = timedelta(minutes=2)
# A second click on "Pay the difference" within this time reuses the open payment page.
OPEN_PAYMENT_REUSE = timedelta(minutes=30)


@dataclass
class PlanChangePreview:
    """A plan change as the shopper is asked to confirm it (and as the email confirms it)."""

    subscription: Subscription
    current_plan: MealPlan
    new_plan: MealPlan
    quote: PlanChangeQuote
    plan_credits: int    # the plan bucket now
    meals_used: int      # of the current plan's meals, this period
    credits_after: int   # the plan bucket once the change applies

    @property
    def is_upgrade(self) -> bool:
        return self.new_plan.price_minor > self.current_plan.price_minor

    @property
    def timing(self) -> str:
        return self.quote.timing


@dataclass
class PlanChangeOutcome:
    """Where the shopper goes next: the account page with `message`, or a payment page."""

    message: str
    redirect_url: str | None = None


def _target_plan(slug: str) -> MealPlan:
    plan = get_plan(slug)  # PLAN_NOT_FOUND, PLAN_INACTIVE
    if not plan.is_recurring:
        raise TiffinError("PLAN_NOT_FOUND", f"{slug} is not a recurring plan")
    return plan


def _preview(subscription: Subscription, plan_credits: int, new_plan: MealPlan,
             proration_date: int | None) -> PlanChangePreview:
    quote = get_gateway(subscription.gateway).quote_plan_change(
        subscription, new_plan, proration_date=proration_date)
    current = subscription.meal_plan
    used = max(current.meals_per_period - plan_credits, 0)
    # At cycle end the new plan starts a fresh period with its full meals.
    after = (new_plan.meals_per_period if quote.timing == CHANGE_AT_CYCLE_END
             else max(new_plan.meals_per_period - used, 0))
    return PlanChangePreview(subscription=subscription, current_plan=current, new_plan=new_plan,
                             quote=quote, plan_credits=plan_credits, meals_used=used,
                             credits_after=after)


def preview_plan_change(user: User, plan_slug: str) -> PlanChangePreview:
    """What moving the shopper's live plan to `plan_slug` costs, when, and what
    happens to their meal credits. Reads only (Stripe: one proration preview).

    Raises:
        TiffinError PLAN_NOT_FOUND (unknown or not a plan), PLAN_INACTIVE (not on
        sale), ORDER_NOT_FOUND (no live subscription), ALREADY_SUBSCRIBED (already
        on that plan), GATEWAY_UNAVAILABLE / GATEWAY_NOT_CONFIGURED (gateway).
    """
    new_plan = _target_plan(plan_slug)
    subscription = live_subscription(user.id)
    if subscription is None:
        raise TiffinError("ORDER_NOT_FOUND", f"user {user.id} has no live subscription")
    if subscription.meal_plan_id == new_plan.id:
        raise TiffinError("ALREADY_SUBSCRIBED", f"user {user.id} is already on {new_plan.slug}")
    return _preview(subscription, user.plan_meal_credits, new_plan, None)


def _proration_instant(raw: str | None) -> int | None:
    """The preview's proration instant carried by the form: None when absent;
    FORM_EXPIRED when it is not a recent unix time."""
    if not raw:
        return None
    now = utcnow()
    try:
        value = int(raw)
    except ValueError as exc:
        raise TiffinError("FORM_EXPIRED", f"proration_date {raw!r} is not a unix time") from exc
    if not ((now - PRORATION_DATE_MAX_AGE).timestamp() <= value
            <= (now + PRORATION_DATE_CLOCK_SKEW).timestamp()):
        raise TiffinError("FORM_EXPIRED", f"proration_date {value} is not within the last "
                          f"{PRORATION_DATE_MAX_AGE}")
    return value


def change_plan(user: User, plan_slug: str, proration_date: str | None = None
                ) -> PlanChangeOutcome:
    """Change the shopper's live plan as the preview described it.

    The gateway changes its remote subscription first (so we never show a
    change it did not accept); then the local rows change and the email is
    queued, in one transaction. On the test gateway a dearer plan is a pending
    order for the difference instead: the outcome sends the shopper to pay it.

    Raises:
        TiffinError PLAN_NOT_FOUND, PLAN_INACTIVE, ORDER_NOT_FOUND (no live
        subscription), FORM_EXPIRED (a stale or malformed `proration_date`),
        GATEWAY_UNAVAILABLE / GATEWAY_NOT_CONFIGURED; nothing changes.
    """
    new_plan = _target_plan(plan_slug)
    when = _proration_instant(proration_date)
    subscription = require_live(user)
    if subscription.meal_plan_id == new_plan.id:
        db.session.rollback()
        return PlanChangeOutcome(f"You are already on {new_plan.name}; nothing changed.")
    plan_credits = db.session.scalar(sa.select(User.plan_meal_credits).where(User.id == user.id))
    change = _preview(subscription, plan_credits, new_plan, when)
    if change.timing == CHANGE_AFTER_PAYMENT:
        db.session.rollback()
        return _pay_difference(user, change)
    gateway = get_gateway(subscription.gateway)
    gateway.change_subscription_plan(subscription, new_plan,
                                     proration_date=change.quote.proration_date)
    actor, now = f"user:{user.id}", utcnow()
    if change.timing == CHANGE_AT_CYCLE_END:
        subscription.scheduled_meal_plan = new_plan
        audit.record(actor, "subscription_plan_change_scheduled", "subscription", subscription.id,
                     user_id=user.id, old_plan=change.current_plan.slug, new_plan=new_plan.slug,
                     effective_at=change.quote.effective_at.isoformat())
        message = f"Your plan will change to {new_plan.name} when your current period ends."
    else:
        apply_plan_change(subscription, new_plan, actor=actor,
                          source_key=f"plan_change:{subscription.id}:{now.isoformat()}",
                          plan_credits=plan_credits)
        message = "Your plan has been changed."
    notifications.enqueue(user, "plan_changed",
                          f"plan_changed:{subscription.id}:{new_plan.id}:{now.isoformat()}",
                          change=change)
    db.session.commit()
    return PlanChangeOutcome(message)


def _pay_difference(user: User, change: PlanChangePreview) -> PlanChangeOutcome:
    """A pending order for the difference, and the gateway's payment page for it
    (the page already open for the same change, on a second click)."""
    subscription, new_plan = change.subscription, change.new_plan
    gateway = get_gateway(subscription.gateway)
    open_order = db.session.scalars(sa.select(Order).where(
        Order.user_id == user.id, Order.kind == ORDER_KIND_PLAN_CHANGE,
        Order.status == ORDER_PENDING, Order.meal_plan_id == new_plan.id,
        Order.amount_minor == change.quote.charge_now_minor, Order.checkout_url.is_not(None),
        Order.created_at >= utcnow() - OPEN_PAYMENT_REUSE).order_by(Order.id.desc())).first()
    if open_order is not None and _change_of(open_order) == (subscription.id,
                                                              change.current_plan.id):
        return PlanChangeOutcome("Pay the difference to change your plan.",
                                 redirect_url=open_order.checkout_url)
    order = Order(user_id=user.id, meal_plan_id=new_plan.id, gateway=gateway.name,
                  kind=ORDER_KIND_PLAN_CHANGE, amount_minor=change.quote.charge_now_minor,
                  currency=change.quote.currency,
                  gateway_data={"plan_change": {"subscription_id": subscription.id,
                                                "from_plan_id": change.current_plan.id}})
    db.session.add(order)
    db.session.flush()
    audit.record(f"user:{user.id}", "plan_change_payment_started", "order", order.id,
                 user_id=user.id, order_id=order.id, subscription_id=subscription.id,
                 old_plan=change.current_plan.slug, new_plan=new_plan.slug,
                 amount_minor=order.amount_minor)
    db.session.commit()  # our order exists before the gateway can name it in a webhook
    started = open_gateway_checkout(order, new_plan, user, gateway)
    return PlanChangeOutcome("Pay the difference to change your plan.",
                             redirect_url=started.redirect_url)


def _change_of(order) -> tuple[int | None, int | None]:
    """(subscription id, plan id it moves from) that a plan-change order pays for."""
    details = (order.gateway_data or {}).get("plan_change") or {}
    return details.get("subscription_id"), details.get("from_plan_id")


def check_paid_change(order, live) -> None:
    """Refuse a paid difference whose change no longer fits the live subscription
    (it ended, or its plan moved on: a second tab paid first). Fulfilment then
    puts the order in review for a refund.

    Raises TiffinError PLAN_CHANGE_OUTDATED.
    """
    subscription_id, from_plan_id = _change_of(order)
    if live is None or live.id != subscription_id or live.meal_plan_id != from_plan_id:
        raise TiffinError("PLAN_CHANGE_OUTDATED",
                          f"order {order.reference} pays for a change of subscription "
                          f"{subscription_id} from plan {from_plan_id}; live is "
                          f"{live.id if live else None} on {live.meal_plan_id if live else None}",
                          order_reference=order.reference)


def apply_paid_change(live, user: User, new_plan: MealPlan, *, order_id: int,
                      order_reference: str, amount_minor: int, currency: str, plan_credits: int,
                      actor: str) -> Subscription:
    """The difference is paid: switch plans, credits to the new plan (less meals
    used), confirmation email. Runs inside fulfilment's transaction (it commits)."""
    subscription = db.session.get(Subscription, live.id, populate_existing=True)
    current_plan = subscription.meal_plan
    credits_after = apply_plan_change(subscription, new_plan, actor=actor,
                                      source_key=f"order:{order_id}", plan_credits=plan_credits,
                                      order_id=order_id)
    change = PlanChangePreview(
        subscription=subscription, current_plan=current_plan, new_plan=new_plan,
        quote=PlanChangeQuote(timing=CHANGE_AFTER_PAYMENT, currency=currency,
                              charge_now_minor=amount_minor),
        plan_credits=plan_credits, meals_used=max(current_plan.meals_per_period - plan_credits, 0),
        credits_after=credits_after)
    notifications.enqueue(user, "plan_changed", f"plan_changed:order:{order_id}", change=change,
                          order_reference=order_reference)
    return subscription
