"""The backstop for missed webhooks: compare each gateway's recent payments with ours.

For every configured gateway, `list_recent_payments(since)` returns what the
gateway knows (Stripe Checkout Sessions and Events, Razorpay payments and
orders). Anything paid there for an order or subscription of ours but not recorded
here is fulfilled (with --fix) through `_create_subscription_and_order`, so a late
webhook afterwards changes nothing; a payment that matches nothing of ours is held
for review and granted only by an operator; anything recorded here that the gateway says was refunded or never
paid is reported for a person to look at.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Callable

import sqlalchemy as sa

from app.errors import TiffinError
from app.extensions import db
from app.gateways import available_gateways, get_gateway
from app.gateways.base import DECLINED, NOT_COMPLETED, PAID, PaymentResult
from app.models import MealPlan, Order, User
from app.models.order import (ORDER_DISPUTED, ORDER_PAID, ORDER_PARTIALLY_REFUNDED,
                              ORDER_REFUNDED)
from app.services import lifecycle, unmatched
from app.services.fulfilment import _create_subscription_and_order

log = logging.getLogger("tiffin.reconcile")
SETTLED = (ORDER_PAID, ORDER_PARTIALLY_REFUNDED, ORDER_REFUNDED, ORDER_DISPUTED)
PAID_HERE = (ORDER_PAID, ORDER_PARTIALLY_REFUNDED)

PAID_NOT_RECORDED = "paid_not_recorded"  # critical: money taken, nothing given
REFUNDED_THERE = "refunded_there"        # warning: we still count it as paid
UNPAID_THERE = "unpaid_there"            # warning: we gave access the gateway never charged for
EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_LOCKED = 0, 1, 2, 4
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class Discrepancy:
    kind: str
    gateway: str
    gateway_order_id: str
    remote_status: str
    local_status: str | None
    reference: str | None
    amount_minor: int | None
    currency: str | None
    fixed: bool = False
    error: str | None = None
    detail: str = ""


@dataclass
class ReconcileReport:
    since: datetime
    fix: bool
    checked: dict = field(default_factory=dict)  # gateway -> payments listed
    discrepancies: list[Discrepancy] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.errors or any(d.kind == PAID_NOT_RECORDED and not d.fixed
                              for d in self.discrepancies):
            return EXIT_CRITICAL
        return EXIT_WARNING if any(d.kind != PAID_NOT_RECORDED for d in self.discrepancies) \
            else EXIT_OK

    def as_dict(self) -> dict:
        return {"since": self.since.isoformat(), "fix": self.fix, "checked": self.checked,
                "exit_code": self.exit_code, "errors": self.errors,
                "discrepancies": [asdict(d) for d in self.discrepancies]}


def _local_orders(gateway: str, ids: list[str], column=Order.gateway_order_id) -> dict[str, Order]:
    """Our orders for these gateway ids (order ids, or payment ids with `column`),
    one query per 500 ids."""
    found = {}
    for i in range(0, len(ids), 500):
        for order in db.session.scalars(sa.select(Order).where(
                Order.gateway == gateway, column.in_(ids[i:i + 500]))):
            found[getattr(order, column.key)] = order
    return found


@dataclass
class _LocalIndex:
    """Our orders for one gateway's payments, by every key a payment can match on."""

    by_order_id: dict[str, Order]
    by_payment_id: dict[str, Order]
    first_charge: dict[str, str]  # subscription id -> its oldest payment listed

    @classmethod
    def load(cls, gateway: str, payments: list[PaymentResult]) -> "_LocalIndex":
        # A plan's activation order is keyed on its subscription id (Razorpay), while its
        # payment names the order of the invoice Razorpay raised: look both up.
        keys = {p.gateway_order_id for p in payments} | {
            p.gateway_subscription_id for p in payments if p.gateway_subscription_id}
        payment_ids = {p.gateway_payment_id for p in payments if p.gateway_payment_id}
        first_charge = {}
        for p in sorted(payments, key=lambda p: p.created_at or _EPOCH):
            if p.gateway_subscription_id and p.status == PAID:
                first_charge.setdefault(p.gateway_subscription_id, p.gateway_payment_id)
        return cls(_local_orders(gateway, sorted(keys)),
                   _local_orders(gateway, sorted(payment_ids), Order.gateway_payment_id),
                   first_charge)

    def match(self, payment: PaymentResult) -> tuple[PaymentResult, Order | None]:
        """The order this payment settles, and the payment keyed as that order is.

        By order id; else the order already holding this payment id; else, for a
        subscription's first charge, the activation order keyed on the subscription id
        while it waits for its payment. Any other charge of a subscription is a
        renewal, keyed on its own order.
        """
        order = self.by_order_id.get(payment.gateway_order_id)
        if order is not None:
            return payment, order
        holder = self.by_payment_id.get(payment.gateway_payment_id or "")
        if holder is not None:
            return replace(payment, gateway_order_id=holder.gateway_order_id), holder
        activation = self.by_order_id.get(payment.gateway_subscription_id or "")
        if activation is not None and activation.status not in SETTLED and \
                self.first_charge.get(payment.gateway_subscription_id) == payment.gateway_payment_id:
            return replace(payment, gateway_order_id=activation.gateway_order_id), activation
        return payment, None


def classify(payment: PaymentResult, order: Order | None) -> tuple[str, str] | None:
    """(kind, detail) when the gateway and we disagree, else None."""
    local = order.status if order is not None else None
    if payment.status == PAID:
        amount = payment.amount_minor or (order.amount_minor if order is not None else 0)
        if payment.refunded_minor and order is not None and local in SETTLED \
                and order.refunded_minor < payment.refunded_minor:
            return REFUNDED_THERE, (f"gateway refunded {payment.refunded_minor} of {amount}; "
                                    f"we record {order.refunded_minor}")
        if local not in SETTLED:
            return PAID_NOT_RECORDED, f"paid at the gateway; here {local or 'no order'}"
        return None
    if payment.status in (DECLINED, NOT_COMPLETED) and local in PAID_HERE:
        return UNPAID_THERE, f"gateway says {payment.status}; here {local}"
    return None


def _owner_and_plan(gateway: str, payment: PaymentResult, order: Order | None
                    ) -> tuple[User | None, MealPlan | None]:
    if order is None and payment.gateway_subscription_id:
        # A renewal charge of a subscription we hold: its owner and plan.
        subscription = lifecycle.find_subscription(gateway, payment.gateway_subscription_id)
        if subscription is not None:
            return (db.session.get(User, subscription.user_id),
                    db.session.get(MealPlan, subscription.meal_plan_id))
    if order is None and payment.order_reference:
        order = db.session.scalars(sa.select(Order).where(
            Order.reference == payment.order_reference)).first()
    if order is not None:
        return db.session.get(User, order.user_id), db.session.get(MealPlan, order.meal_plan_id)
    return None, None  # the gateway's metadata alone proves no purchase here


def fulfil(gateway: str, payment: PaymentResult, order: Order | None, *,
           actor: str = "cli:reconcile") -> bool:
    """Fulfil a payment the gateway took and we missed. Returns True when this call did it.

    A payment that matches no order and no subscription of ours grants nothing: it is
    held for an operator's decision (unmatched.hold_payment) and reported unfixed.

    Raises TiffinError when the helper refuses (PAYMENT_UNMATCHED for a held payment).
    """
    user, plan = _owner_and_plan(gateway, payment, order)
    if user is None or plan is None:
        held = unmatched.hold_payment(
            gateway, payment.gateway_order_id, payment.gateway_payment_id, payment.amount_minor,
            payment.currency, user_id=payment.metadata_user_id, plan_id=payment.metadata_plan_id,
            actor=actor)
        where = f"as order {held.reference}" if held is not None else "(names no user/plan of ours)"
        raise TiffinError("PAYMENT_UNMATCHED", f"matches no order or subscription of ours: held "
                          f"for review {where}; refund it or grant it (flask orders refund/grant)")
    amount = payment.amount_minor if payment.amount_minor is not None else \
        (order.amount_minor if order is not None else plan.price_minor)
    currency = payment.currency or (order.currency if order is not None else plan.currency)
    result = _create_subscription_and_order(
        user, plan, gateway, payment.gateway_order_id, payment.gateway_payment_id, amount, currency,
        actor=actor, metadata_user_id=payment.metadata_user_id,
        gateway_customer_id=payment.gateway_customer_id,
        gateway_subscription_id=payment.gateway_subscription_id,
        period_start=payment.period_start, period_end=payment.period_end,
        gateway_data={"reconciled": True})
    return result.created


def reconcile(since: datetime, *, fix: bool = False, actor: str = "cli:reconcile",
              gateways: list[str] | None = None, progress: Callable | None = None,
              only: Order | None = None) -> ReconcileReport:
    """Compare every configured gateway's payments since `since` with our orders
    (`only`: just that order's payment, as the console's one-order reconcile)."""
    report = ReconcileReport(since=since, fix=fix)
    for name in gateways or available_gateways():
        try:
            payments = get_gateway(name).list_recent_payments(since)
        except Exception as exc:  # an unreachable gateway is reported, and fails the run
            log.exception("listing %s payments failed", name)
            report.errors.append(f"{name}: could not list payments: {exc}")
            continue
        if only is not None:
            payments = [p for p in payments if only.gateway_order_id in
                        (p.gateway_order_id, p.gateway_subscription_id)
                        or (p.order_reference and p.order_reference == only.reference)]
        report.checked[name] = len(payments)
        local = _LocalIndex.load(name, payments)
        for payment in (progress(payments) if progress else payments):
            payment, order = local.match(payment)
            found = classify(payment, order)
            if found is None:
                continue
            kind, detail = found
            item = Discrepancy(kind, name, payment.gateway_order_id, payment.status,
                               order.status if order is not None else None,
                               order.reference if order is not None else payment.order_reference,
                               payment.amount_minor, payment.currency, detail=detail)
            report.discrepancies.append(item)
            if fix and kind == PAID_NOT_RECORDED:
                try:
                    fulfil(name, payment, order, actor=actor)
                    item.fixed = True  # fulfilled now, or by a webhook that won the race
                except (TiffinError, ValueError) as exc:
                    db.session.rollback()
                    item.error = f"{getattr(exc, 'code', 'ERROR')}: {getattr(exc, 'detail', exc)}"
    return report


def reconcile_order(reference: str, *, fix: bool = False, actor: str = "cli:reconcile"
                    ) -> ReconcileReport:
    """`reconcile` for one order: ask its gateway about payments since the order was made.

    Raises LookupError when no order has this reference.
    """
    order = db.session.scalars(sa.select(Order).where(Order.reference == reference)).first()
    if order is None:
        raise LookupError(f"no order {reference}")
    since = order.created_at - timedelta(minutes=5)
    return reconcile(since, fix=fix, actor=actor, gateways=[order.gateway], only=order)
