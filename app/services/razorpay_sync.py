"""Razorpay events and callbacks turned into the shared services' calls.

Payments are fulfilled only through `_create_subscription_and_order`; the
subscription's later life goes through `app.services.lifecycle`. This module
only decides which of those a Razorpay entity means:

- A one-time pack is keyed on the Razorpay order id (`order_…`) we created.
- A meal plan's activation order is keyed on the subscription id (`sub_…`).
  Razorpay charges the plan amount when the shopper authenticates the
  subscription, and reports that same payment again as the first
  `subscription.charged`. So a charge is the *activation* while the activation
  order is still payable or already carries this payment id; only a charge with
  another payment id is a renewal, keyed on the charge's own order id. The
  activation is therefore granted once, whichever of callback and webhook wins.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from app.errors import TiffinError
from app.extensions import db
from app.gateways import get_gateway
from app.gateways.razorpay import from_unix, note_int
from app.models import MealPlan, Order, Subscription, User
from app.models.order import ORDER_PAID, ORDER_PARTIALLY_REFUNDED, ORDER_REFUNDED
from app.models.subscription import (LIVE_STATUSES, SUB_ACTIVE, SUB_CANCELED, SUB_COMPLETED,
                                     SUB_UNPAID)
from app.models.types import utcnow
from app.services import audit, lifecycle, unmatched
from app.services.checkout import mark_order_authorized, mark_order_failed
from app.services.fulfilment import (PAYABLE, SETTLED, FulfilmentResult,
                                     _create_subscription_and_order, find_order)

log = logging.getLogger("tiffin.razorpay")
GATEWAY = "razorpay"
ACTOR = "webhook:razorpay"


def order_for_payment(payment: dict) -> Order | None:
    """Our order for a Razorpay payment: by payment id (renewals too), else by its order id."""
    order = db.session.scalars(sa.select(Order).where(
        Order.gateway == GATEWAY, Order.gateway_payment_id == payment["id"])).first()
    if order is None and payment.get("order_id"):
        order = find_order(GATEWAY, payment["order_id"])
    return order


def _fulfil(user: User, plan: MealPlan, gateway_order_id: str, payment: dict, *, actor: str,
            **extra) -> FulfilmentResult | None:
    try:
        return _create_subscription_and_order(
            user, plan, GATEWAY, gateway_order_id, payment["id"], int(payment["amount"]),
            str(payment["currency"]), actor=actor,
            metadata_user_id=note_int(payment.get("notes"), "user_id"),
            gateway_data={"razorpay_method": payment.get("method")}, **extra)
    except TiffinError as exc:
        # Refused, logged and audited (the order is in needs_review); a retry cannot help.
        log.warning("razorpay %s payment %s refused: %s", gateway_order_id, payment["id"], exc.code)
        return None


# --- one-time packs (Orders API) ---------------------------------------------------
def fulfil_order_payment(payment: dict, *, actor: str = ACTOR) -> FulfilmentResult | None:
    """Fulfil a captured payment of one of our Razorpay orders (payment.captured, order.paid).

    Returns None when it is not ours to fulfil here: a subscription charge
    (subscription.charged drives those), a payment of no order of ours (held for
    review, nothing granted), or a refused fulfilment.
    """
    if payment.get("status") != "captured":
        return None
    order = find_order(GATEWAY, payment["order_id"]) if payment.get("order_id") else None
    if order is None:
        if not payment.get("invoice_id"):
            _hold(payment, payment.get("order_id"), payment.get("notes"), actor=actor)
        return None
    user, plan = db.session.get(User, order.user_id), order.meal_plan
    return _fulfil(user, plan, payment["order_id"], payment, actor=actor)


def _hold(payment: dict, gateway_order_id: str | None, notes, *, actor: str) -> None:
    """Paid at Razorpay, but no order or subscription of ours: held for review."""
    unmatched.hold_payment(GATEWAY, gateway_order_id, payment["id"], payment.get("amount"),
                           str(payment.get("currency") or "") or None,
                           user_id=note_int(notes, "user_id"), plan_id=note_int(notes, "plan_id"),
                           actor=actor)


def record_authorization(payment: dict, *, actor: str = ACTOR) -> FulfilmentResult | None:
    """payment.authorized: note it on the pending order, then capture it if it is ours.

    A capture that fails leaves the order pending with `authorized_at` set (the
    monitor warns before Razorpay refunds it); payment.captured fulfils later.
    """
    order = find_order(GATEWAY, payment["order_id"]) if payment.get("order_id") else None
    if order is None or order.status not in PAYABLE:
        return None
    mark_order_authorized(order, at=from_unix(payment.get("created_at")) or utcnow(), actor=actor)
    captured = get_gateway(GATEWAY).capture_if_matching(payment, order.amount_minor, order.currency)
    return fulfil_order_payment(captured, actor=actor)


def record_payment_failure(payment: dict, *, actor: str = ACTOR) -> bool:
    """payment.failed: a pending order becomes failed, keeping Razorpay's reason for the shopper."""
    order = find_order(GATEWAY, payment["order_id"]) if payment.get("order_id") else None
    if order is None:
        return False
    return mark_order_failed(order, payment.get("error_code") or payment.get("error_reason")
                             or "payment_failed", payment.get("error_description"), actor=actor)


# --- refunds and disputes ------------------------------------------------------------
def record_refund_event(refund: dict, payment: dict | None, *, actor: str = ACTOR) -> str | None:
    """refund.processed: record Razorpay's cumulative refunded amount on the order."""
    if payment is None:
        payment = get_gateway(GATEWAY).fetch_payment(refund["payment_id"])
    order = order_for_payment(payment)
    if order is None or order.status not in (ORDER_PAID, ORDER_PARTIALLY_REFUNDED, ORDER_REFUNDED):
        return None
    return lifecycle.record_refund(order, refunded_total_minor=int(payment["amount_refunded"]),
                                   refund_id=refund["id"], actor=actor)


def record_dispute_event(dispute: dict, payment: dict | None, *, actor: str = ACTOR) -> bool:
    """payment.dispute.created: mark the order disputed and revoke access at once."""
    order = order_for_payment(payment or {"id": dispute["payment_id"]})
    if order is None:
        return False
    return lifecycle.record_dispute(order, dispute_id=dispute["id"], actor=actor)


# --- meal plans (Subscriptions API) --------------------------------------------------
def apply_subscription_charge(subscription_entity: dict, payment: dict | None, *,
                              event_at=None, actor: str = ACTOR) -> FulfilmentResult | None:
    """subscription.charged: the activation payment, or a renewal (see the module docstring).

    The event's time is stamped on the subscription afterwards, so an older
    pending/halted event delivered late cannot undo the paid period.
    """
    result = _apply_charge(subscription_entity, payment, actor=actor)
    db.session.rollback()  # a fresh snapshot before reading the subscription again
    if result is not None and result.subscription is not None and event_at is not None:
        subscription = db.session.get(Subscription, result.subscription.id)
        if subscription.status == SUB_ACTIVE:
            lifecycle.apply_remote_state(subscription, status=SUB_ACTIVE, event_at=event_at,
                                         actor=actor)
    return result


def _apply_charge(subscription_entity: dict, payment: dict | None, *,
                  actor: str) -> FulfilmentResult | None:
    if payment is None or payment.get("status") != "captured":
        return None
    sub_id = subscription_entity["id"]
    period = dict(period_start=from_unix(subscription_entity.get("current_start")),
                  period_end=from_unix(subscription_entity.get("current_end")))
    activation = find_order(GATEWAY, sub_id)
    subscription = lifecycle.find_subscription(GATEWAY, sub_id)
    holder = order_for_payment(payment)
    if holder is not None and holder.status in SETTLED:
        # Recorded already (a renewal replayed, or an order reconcile made before it
        # matched activations by subscription id): nothing more to do.
        if activation is not None and holder.id != activation.id and activation.status in PAYABLE:
            log.warning("razorpay charge %s is recorded on order %s; activation order %s "
                        "is left %s for review", payment["id"], holder.reference,
                        activation.reference, activation.status)
        return FulfilmentResult(holder.id, created=False)
    if activation is not None and (activation.status in PAYABLE
                                   or activation.gateway_payment_id == payment["id"]):
        user = db.session.get(User, activation.user_id)
        return _fulfil(user, activation.meal_plan, sub_id, payment, actor=actor,
                       gateway_subscription_id=sub_id,
                       gateway_customer_id=subscription_entity.get("customer_id"), **period)
    if subscription is None:
        if activation is not None:
            log.error("razorpay charge %s for subscription %s matches no Tiffin subscription",
                      payment["id"], sub_id)
            return None
        # Paid at Razorpay, but no activation order or subscription of ours.
        _hold(payment, sub_id, subscription_entity.get("notes"), actor=actor)
        return None
    if subscription.status == SUB_UNPAID:
        # Halted, then a retry succeeded: Razorpay reactivates it, and so do we.
        lifecycle.apply_remote_state(subscription, status=SUB_ACTIVE, event_at=None, actor=actor)
        subscription = db.session.get(Subscription, subscription.id, populate_existing=True)
    if subscription.status not in LIVE_STATUSES:
        log.error("razorpay charge %s on %s subscription %s: not renewed", payment["id"],
                  subscription.status, sub_id)
        return None
    try:
        return lifecycle.record_renewal(
            subscription, gateway_order_id=payment.get("order_id") or payment["id"],
            gateway_payment_id=payment["id"], amount_minor=int(payment["amount"]),
            currency=str(payment["currency"]), actor=actor, **period)
    except TiffinError as exc:
        log.warning("razorpay renewal %s refused: %s", payment["id"], exc.code)
        return None


def apply_subscription_state(subscription_entity: dict, event_type: str, *, event_at,
                             actor: str = ACTOR) -> bool:
    """pending (grace), halted (no access), cancelled, completed: sync our copy."""
    subscription = lifecycle.find_subscription(GATEWAY, subscription_entity["id"])
    if subscription is None:
        return False
    if event_type == "subscription.pending":
        cycle = subscription_entity.get("current_end") or subscription_entity.get("charge_at") or ""
        return lifecycle.mark_past_due(subscription, event_at=event_at, actor=actor,
                                       dedupe_key=f"razorpay:past_due:{subscription.id}:{cycle}")
    if event_type == "subscription.halted":
        return lifecycle.apply_remote_state(subscription, status=SUB_UNPAID, event_at=event_at,
                                            actor=actor)
    status = {"subscription.cancelled": SUB_CANCELED,
              "subscription.completed": SUB_COMPLETED}[event_type]
    return lifecycle.end_subscription(subscription, status=status, actor=actor, event_at=event_at)


# --- catalogue: flask razorpay sync-plans ----------------------------------------------
@dataclass
class PlanSync:
    slug: str
    razorpay_plan_id: str
    action: str  # "unchanged", "linked" (an existing Razorpay plan), "created"


def sync_plans() -> list[PlanSync]:
    """Give every active recurring meal plan a Razorpay plan billing its current price.

    Razorpay plans cannot be edited, so a price or interval change creates a new
    plan and points the meal plan at it; live subscriptions keep their old plan.
    Re-running changes nothing. Raises whatever the SDK raises (the command reports it).
    """
    gateway = get_gateway(GATEWAY)
    remote = gateway.list_plans()
    by_id = {p["id"]: p for p in remote}
    plans = db.session.scalars(sa.select(MealPlan).where(
        MealPlan.is_active.is_(True), MealPlan.billing_interval.is_not(None))
        .order_by(MealPlan.sort_order)).all()
    results = []
    for plan in plans:
        if not plan.is_recurring:
            continue
        current = by_id.get(plan.razorpay_plan_id or "")
        if current is not None and gateway.plan_matches(current, plan):
            results.append(PlanSync(plan.slug, current["id"], "unchanged"))
            continue
        match = next((p for p in remote if isinstance(p.get("notes"), dict)
                      and p["notes"].get("tiffin_plan") == plan.slug
                      and gateway.plan_matches(p, plan)), None)
        action = "linked" if match is not None else "created"
        if match is None:
            match = gateway.create_plan(plan)
            remote.append(match)
        old = plan.razorpay_plan_id
        plan.razorpay_plan_id = match["id"]
        audit.record("cli:razorpay", "razorpay_plan_" + action, "meal_plan", plan.id,
                     old_plan_id=old, new_plan_id=match["id"])
        db.session.commit()
        results.append(PlanSync(plan.slug, match["id"], action))
    return results
