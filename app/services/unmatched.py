"""Payments a gateway reports that we cannot tie to an order or subscription of ours.

Such a payment grants nothing on its own (a correctly signed event naming a user
is not proof that this user bought anything here): it is held as an order in
`needs_review` with failure code PAYMENT_UNMATCHED, the monitor reports it as
critical (possible duplicate charge), and an operator decides: refund it
(`flask orders refund REF`) or grant it (`flask orders grant REF`).
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.errors import TiffinError
from app.extensions import db
from app.models import MealPlan, Order, User
from app.models.order import ORDER_KIND_ADDON, ORDER_KIND_NEW, ORDER_NEEDS_REVIEW, ORDER_PENDING
from app.services import audit
from app.services.fulfilment import (UNMATCHED, FulfilmentResult, _create_subscription_and_order,
                                     find_order)

log = logging.getLogger("tiffin.unmatched")


def is_held(order) -> bool:
    """True for an unmatched payment waiting for an operator's decision."""
    return order.status == ORDER_NEEDS_REVIEW and order.failure_code == UNMATCHED


def _order_holding(gateway: str, gateway_order_id: str, gateway_payment_id: str | None):
    order = find_order(gateway, gateway_order_id)
    if order is None and gateway_payment_id:
        order = db.session.scalars(sa.select(Order).where(
            Order.gateway == gateway, Order.gateway_payment_id == gateway_payment_id)).first()
    return order


def hold_payment(gateway: str, gateway_order_id: str | None, gateway_payment_id: str | None,
                 amount_minor: int | None, currency: str | None, *, user_id=None, plan_id=None,
                 event=None, actor: str) -> Order | None:
    """Store a payment that matches no order or subscription, for review; grant nothing.

    Idempotent: a replayed event finds the held order (or the order that holds the
    payment) and changes nothing. Returns the held order, or None when the payment
    names no user and plan of ours (then only the stored event and an audit row keep it).
    """
    key = gateway_order_id or gateway_payment_id or (event.event_id if event else "")
    existing = _order_holding(gateway, key, gateway_payment_id)
    if existing is not None:
        return existing
    user = db.session.get(User, int(user_id)) if user_id else None
    plan = db.session.get(MealPlan, int(plan_id)) if plan_id else None
    facts = dict(gateway=gateway, gateway_order_id=gateway_order_id,
                 gateway_payment_id=gateway_payment_id, amount_minor=amount_minor,
                 currency=currency, named_user_id=user_id, named_plan_id=plan_id,
                 event_id=event.event_id if event else None,
                 event_type=event.event_type if event else None)
    log.error("unmatched %s payment %s (order %s, %s %s) names user %s, plan %s: held for "
              "review, nothing granted (possible duplicate charge)", gateway, gateway_payment_id,
              gateway_order_id, amount_minor, currency, user_id, plan_id)
    if user is None or plan is None:
        audit.record(actor, "payment_unmatched", "payment", gateway_payment_id or key, **facts)
        db.session.commit()
        return None
    order = Order(user_id=user.id, meal_plan_id=plan.id, gateway=gateway, gateway_order_id=key,
                  gateway_payment_id=gateway_payment_id, gateway_metadata_user_id=user.id,
                  amount_minor=int(amount_minor or 0), currency=(currency or plan.currency).upper(),
                  kind=ORDER_KIND_NEW if plan.is_recurring else ORDER_KIND_ADDON,
                  status=ORDER_NEEDS_REVIEW, failure_code=UNMATCHED,
                  failure_message="payment matches no order or subscription of ours",
                  gateway_data={"unmatched": facts})
    db.session.add(order)
    try:
        db.session.flush()
        audit.record(actor, "payment_unmatched", "order", order.id, user_id=user.id,
                     order_id=order.id, **facts)
        db.session.commit()
    except IntegrityError:  # the same payment held (or recorded) by a concurrent delivery
        db.session.rollback()
        return _order_holding(gateway, key, gateway_payment_id)
    return order


def grant_held(reference: str, *, actor: str) -> FulfilmentResult:
    """An operator's decision to give what a held payment paid for, through the one
    fulfilment helper. Raises TiffinError ORDER_NOT_FOUND when `reference` is not a
    held payment, or the helper's own refusal (the order goes back to review)."""
    order = db.session.scalars(sa.select(Order).where(Order.reference == reference)
                               .with_for_update()).first()
    if order is None or not is_held(order):
        raise TiffinError("ORDER_NOT_FOUND", f"{reference} is not a payment held for review")
    order.status, order.failure_code, order.failure_message = ORDER_PENDING, None, None
    audit.record(actor, "held_payment_granted", "order", order.id, user_id=order.user_id,
                 order_id=order.id)
    db.session.commit()
    user, plan = db.session.get(User, order.user_id), db.session.get(MealPlan, order.meal_plan_id)
    return _create_subscription_and_order(
        user, plan, order.gateway, order.gateway_order_id, order.gateway_payment_id,
        order.amount_minor, order.currency, actor=actor, metadata_user_id=order.user_id)
