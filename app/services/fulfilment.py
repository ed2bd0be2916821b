"""Fulfilment: the one place a paid order becomes a subscription and meal credits.

Every path that learns of a payment — the return redirect, the gateway callback,
a webhook, the reconcile backstop, the repair tool — calls
`_create_subscription_and_order`. It is idempotent on (gateway, gateway order
id): the first caller fulfils, every later or concurrent caller gets the same
order and subscription back and changes nothing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.attributes import set_committed_value

from app import logs
from app.errors import TiffinError
from app.extensions import db
from app.models import MealPlan, Order, Subscription, User
from app.models.order import (ORDER_CANCELED, ORDER_DISPUTED, ORDER_FAILED, ORDER_KIND_ADDON,
                              ORDER_KIND_NEW, ORDER_KIND_PLAN_CHANGE, ORDER_KIND_RENEWAL,
                              ORDER_NEEDS_REVIEW, ORDER_PAID, ORDER_PARTIALLY_REFUNDED,
                              ORDER_PENDING, ORDER_REFUNDED)
from app.models.order import new_order_reference
from app.models.subscription import LIVE_STATUSES, SUB_ACTIVE
from app.models.types import utcnow
from app.money import format_money
from app.services import audit, credits, notifications
from app.services.periods import add_interval
from app.services.sql import DriverStatement

log = logging.getLogger("tiffin.fulfilment")

# Once an order reached one of these, a late or repeated payment signal changes nothing.
SETTLED = (ORDER_PAID, ORDER_REFUNDED, ORDER_PARTIALLY_REFUNDED, ORDER_DISPUTED)
# An order may become paid from these (Razorpay sends payment.failed then payment.captured).
PAYABLE = (ORDER_PENDING, ORDER_FAILED, ORDER_CANCELED, ORDER_NEEDS_REVIEW)
# A needs_review order with this failure code is a payment we could not tie to an
# order (app.services.unmatched): only an operator's decision fulfils it.
UNMATCHED = "PAYMENT_UNMATCHED"
_SQLITE_LOCK_RETRIES = 20


ORDERS = Order.__table__
SUBSCRIPTIONS = Subscription.__table__
# What fulfilment reads of an order: enough to check the payment and settle it.
_ORDER_COLUMNS = (ORDERS.c.id, ORDERS.c.reference, ORDERS.c.user_id, ORDERS.c.meal_plan_id,
                  ORDERS.c.kind, ORDERS.c.status, ORDERS.c.amount_minor, ORDERS.c.currency,
                  ORDERS.c.gateway_data, ORDERS.c.failure_code)
_SETTLED_CHECK_COLUMNS = (ORDERS.c.id, ORDERS.c.reference, ORDERS.c.user_id, ORDERS.c.status)
_SUBSCRIPTION_COLUMNS = (SUBSCRIPTIONS.c.id, SUBSCRIPTIONS.c.order_id, SUBSCRIPTIONS.c.gateway,
                         SUBSCRIPTIONS.c.gateway_subscription_id, SUBSCRIPTIONS.c.status,
                         SUBSCRIPTIONS.c.current_period_end, SUBSCRIPTIONS.c.meal_plan_id)
# The hot path's statements are built once and run on the driver (DriverStatement):
# each payment signal (a redirect and several webhook copies) runs them.
_THIS_ORDER = ((ORDERS.c.gateway == sa.bindparam("gateway"))
               & (ORDERS.c.gateway_order_id == sa.bindparam("gateway_order_id")))
_SEEN_ORDER = DriverStatement(sa.select(*_SETTLED_CHECK_COLUMNS).where(_THIS_ORDER))
_LOCK_ORDER = DriverStatement(sa.select(*_ORDER_COLUMNS).where(_THIS_ORDER).with_for_update())
_LOCK_USER = DriverStatement(sa.select(User.plan_meal_credits, User.addon_meal_credits)
                             .where(User.id == sa.bindparam("user_id")).with_for_update())
_LOCK_LIVE_SUBSCRIPTION = DriverStatement(
    sa.select(*_SUBSCRIPTION_COLUMNS)
    .where(SUBSCRIPTIONS.c.user_id == sa.bindparam("user_id"),
           sa.or_(*(SUBSCRIPTIONS.c.status == status for status in LIVE_STATUSES)))
    .with_for_update())
# Parameter names of the WHERE clauses differ from column names: in an UPDATE, the
# other parameters name the columns to set.
_MARK_ORDER_PAID = DriverStatement(
    sa.update(ORDERS).where(ORDERS.c.id == sa.bindparam("p_order_id")))
_EXTEND_SUBSCRIPTION = DriverStatement(
    sa.update(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.id == sa.bindparam("p_subscription_id")))
_START_SUBSCRIPTION = DriverStatement(sa.insert(SUBSCRIPTIONS).returning(SUBSCRIPTIONS.c.id))
_ORDER_PAYER = (sa.select(User, MealPlan).select_from(Order)
                .join(User, User.id == Order.user_id)
                .join(MealPlan, MealPlan.id == Order.meal_plan_id).where(_THIS_ORDER))


@dataclass
class FulfilmentResult:
    """What fulfilment did. The order and subscription are loaded when first read,
    so a caller that only needs the outcome (a webhook) never pays for them."""

    order_id: int
    created: bool  # False when an earlier (or concurrent) call had already fulfilled it
    subscription_id: int | None = None  # set when this call started or extended one

    @property
    def order(self) -> Order:
        return db.session.get(Order, self.order_id)

    @property
    def subscription(self) -> Subscription | None:
        """The subscription the order started or extended (for a pack: the live one)."""
        if self.subscription_id is not None:
            return db.session.get(Subscription, self.subscription_id)
        return subscription_for_order(self.order)


def find_order(gateway: str, gateway_order_id: str, *, for_update: bool = False) -> Order | None:
    query = sa.select(Order).where(Order.gateway == gateway,
                                   Order.gateway_order_id == gateway_order_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    order = db.session.scalars(query).first()
    if order is not None:
        logs.bind(order_reference=order.reference)  # every later log line names the order
    return order


def payer(gateway: str, gateway_order_id: str) -> tuple[User, MealPlan] | None:
    """Who paid and for what: the stored order's owner and plan (one query), or None
    when we hold no such order (a payment we cannot tie to one grants nothing: see
    app.services.unmatched)."""
    found = db.session.execute(_ORDER_PAYER, {"gateway": gateway,
                                              "gateway_order_id": gateway_order_id}).first()
    return tuple(found) if found is not None else None


def lock_user(user_id: int):
    """Lock a user's row for the rest of the transaction; return its credit balances
    (plan_meal_credits, addon_meal_credits), current while the lock is held.

    Lock order, everywhere money or access changes: user, then order, then
    subscription. Taking the user first serialises all of one shopper's changes
    and rules out deadlocks between fulfilment and lifecycle updates.
    """
    return _LOCK_USER.execute({"user_id": user_id}).one()


def subscription_for_order(order: Order) -> Subscription | None:
    """The subscription an order started, extended, or (for a pack) sat beside."""
    if order.subscription is not None:
        return order.subscription
    if order.parent_order_id is not None:
        parent = db.session.get(Order, order.parent_order_id)
        if parent is not None and parent.subscription is not None:
            return parent.subscription
    return live_subscription(order.user_id)


def live_subscription(user_id: int, *, for_update: bool = False) -> Subscription | None:
    query = sa.select(Subscription).where(Subscription.user_id == user_id,
                                          Subscription.status.in_(LIVE_STATUSES))
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return db.session.scalars(query).first()


def _settled_result(order, user: User) -> FulfilmentResult:
    if order.user_id != user.id:
        raise TiffinError("PAYMENT_USER_MISMATCH",
                          f"order {order.reference} belongs to user {order.user_id}, not {user.id}",
                          order_reference=order.reference)
    return FulfilmentResult(order.id, created=False)


def _check_payment(order, user: User, plan: MealPlan, amount_minor: int,
                   currency: str, metadata_user_id: int | None, *,
                   gateway_renewal: bool = False) -> None:
    """Refuse what must not be fulfilled. Raises TiffinError with a specific code.

    A renewal the gateway charged on a subscription it bills (`gateway_renewal`) is
    the gateway's own figure: prorations, coupons and tax make it differ from the
    list price, and a plan retired from sale keeps renewing for its subscribers.
    Only its currency must match.
    """
    if order is not None and order.user_id != user.id:
        raise TiffinError("PAYMENT_USER_MISMATCH",
                          f"order {order.reference} belongs to user {order.user_id}, not {user.id}",
                          order_reference=order.reference)
    if metadata_user_id is not None and int(metadata_user_id) != user.id:
        raise TiffinError("PAYMENT_USER_MISMATCH",
                          f"gateway metadata names user {metadata_user_id}, fulfilling for {user.id}",
                          order_reference=order.reference if order else None)
    if order is not None and order.meal_plan_id != plan.id:
        raise TiffinError("PAYMENT_AMOUNT_MISMATCH",
                          f"order is for plan {order.meal_plan_id}, payment names plan {plan.id}",
                          order_reference=order.reference)
    if not plan.is_active and not gateway_renewal:
        raise TiffinError("PLAN_INACTIVE", f"plan {plan.slug} is inactive",
                          order_reference=order.reference if order else None)
    # The order records the price when checkout started; without one, the plan's price.
    expected_amount = order.amount_minor if order is not None else plan.price_minor
    expected_currency = (order.currency if order is not None else plan.currency).upper()
    amount_ok = amount_minor >= 0 if gateway_renewal else amount_minor == expected_amount
    if not amount_ok or (currency or "").upper() != expected_currency:
        raise TiffinError("PAYMENT_AMOUNT_MISMATCH",
                          f"paid {amount_minor} {currency}, expected {expected_amount} "
                          f"{expected_currency}", order_reference=order.reference if order else None)


def _start_or_extend_subscription(current, order_id: int, user: User, plan: MealPlan, gateway: str,
                                  *, now: datetime, period_start, period_end,
                                  gateway_subscription_id, gateway_customer_id,
                                  audit_rows: list) -> SimpleNamespace:
    """Create the user's subscription, or extend `current` (their live one).

    Returns what the confirmation email shows of it (id, status, period end).
    """
    if current is not None:
        # A second plan payment while one is live (two tabs, a reconcile of an
        # old session): the money bought another period, so extend rather than lose it.
        # A gateway renewal arrives the same way, with the gateway's own period.
        base = max(current.current_period_end, now)
        end = period_end or add_interval(base, plan.billing_interval, plan.interval_count)
        # A paid renewal ends any past_due grace period.
        _EXTEND_SUBSCRIPTION.execute(dict(
            p_subscription_id=current.id, current_period_start=period_start or base,
            current_period_end=end, meal_plan_id=plan.id, status=SUB_ACTIVE,
            grace_period_ends_at=None, scheduled_meal_plan_id=None))
        audit_rows.append(audit.entry(gateway, "subscription_extended", "subscription", current.id,
                                      user_id=user.id, order_id=order_id,
                                      period_end=end.isoformat()))
        return SimpleNamespace(id=current.id, status=SUB_ACTIVE, current_period_end=end,
                               meal_plan=plan)
    start = period_start or now
    end = period_end or add_interval(start, plan.billing_interval, plan.interval_count)
    subscription_id = _START_SUBSCRIPTION.execute(dict(
        user_id=user.id, meal_plan_id=plan.id, order_id=order_id, gateway=gateway,
        gateway_subscription_id=gateway_subscription_id, gateway_customer_id=gateway_customer_id,
        status=SUB_ACTIVE, current_period_start=start, current_period_end=end,
    )).scalar_one()
    audit_rows.append(audit.entry(gateway, "subscription_created", "subscription",
                                  subscription_id, user_id=user.id, order_id=order_id,
                                  plan=plan.slug))
    return SimpleNamespace(id=subscription_id, status=SUB_ACTIVE, current_period_end=end,
                           meal_plan=plan)


def _fulfil_once(user: User, plan: MealPlan, gateway: str, gateway_order_id: str,
                 gateway_payment_id: str | None, amount_minor: int, currency: str, *, actor: str,
                 metadata_user_id, gateway_customer_id, gateway_subscription_id, period_start,
                 period_end, gateway_data) -> FulfilmentResult:
    # Written as single SQL statements, not ORM units of work: this runs once per
    # payment signal (a redirect and several webhook copies each), so it is the hot path.
    this_order = {"gateway": gateway, "gateway_order_id": gateway_order_id}
    user_id = user.id  # read before the commit expires `user`
    # Fast path: most repeats (webhook copies, page refreshes) end here with one SELECT.
    seen = _SEEN_ORDER.execute(this_order).first()
    if seen is not None and seen.status in SETTLED:
        return _settled_result(seen, user)

    # Lock the user, then the order: every money change for one user is serialised,
    # and a concurrent caller waits here and then sees the winner's paid order.
    balances = lock_user(user.id)
    order = _LOCK_ORDER.execute(this_order).first()
    if order is not None and order.status in SETTLED:
        db.session.commit()  # release the locks: a concurrent caller won
        return _settled_result(order, user)
    if order is not None and order.status not in PAYABLE:
        raise RuntimeError(f"order {order.reference} in unexpected status {order.status}")
    if order is not None and order.status == ORDER_NEEDS_REVIEW and order.failure_code == UNMATCHED:
        raise TiffinError(UNMATCHED, f"order {order.reference} is a payment held for review",
                          order_reference=order.reference)

    current = _LOCK_LIVE_SUBSCRIPTION.execute({"user_id": user_id}).first()
    gateway_renewal = (order is None and current is not None and bool(gateway_subscription_id)
                       and current.gateway == gateway
                       and current.gateway_subscription_id == gateway_subscription_id)
    _check_payment(order, user, plan, amount_minor, currency, metadata_user_id,
                   gateway_renewal=gateway_renewal)
    plan_change = order is not None and order.kind == ORDER_KIND_PLAN_CHANGE
    if plan_change:
        from app.services import plan_changes  # it builds on this module

        plan_changes.check_paid_change(order, current)
    now = utcnow()
    paid = dict(status=ORDER_PAID, paid_at=now, failure_code=None, failure_message=None)
    if gateway_payment_id:
        paid["gateway_payment_id"] = gateway_payment_id
    if gateway_customer_id:
        paid["gateway_customer_id"] = gateway_customer_id
    if metadata_user_id is not None:
        paid["gateway_metadata_user_id"] = int(metadata_user_id)
    if gateway_subscription_id and plan.is_recurring:
        # Kept on the order as well: a repair that re-creates a lost subscription
        # links it to the gateway's from here, without asking the gateway.
        gateway_data = {**(gateway_data or {}), "gateway_subscription_id": gateway_subscription_id}
    if gateway_data:
        paid["gateway_data"] = {**((order.gateway_data if order else None) or {}), **gateway_data}
    kind = order.kind if order is not None else (
        ORDER_KIND_NEW if plan.is_recurring else ORDER_KIND_ADDON)
    if plan.is_recurring and current is not None and not plan_change:
        kind = paid["kind"] = ORDER_KIND_RENEWAL
        paid["parent_order_id"] = current.order_id
    if order is None:
        # Paid at the gateway but we never stored the pending order (reconcile, lost row).
        reference = new_order_reference()
        order_id = db.session.execute(sa.insert(ORDERS).values(
            reference=reference, user_id=user.id, meal_plan_id=plan.id, gateway=gateway,
            gateway_order_id=gateway_order_id, amount_minor=amount_minor,
            currency=currency.upper(), **{"kind": kind, **paid}).returning(ORDERS.c.id)
        ).scalar_one()
        order_amount, order_currency = amount_minor, currency.upper()
    else:
        order_id, reference = order.id, order.reference
        order_amount, order_currency = order.amount_minor, order.currency
        _MARK_ORDER_PAID.execute({"p_order_id": order_id, **paid})

    audit_rows: list = []
    source_key = f"order:{order_id}"
    if plan_change:
        # The difference to a dearer plan is paid: the plan changes, the period stays.
        subscription = plan_changes.apply_paid_change(
            current, user, plan, order_id=order_id, order_reference=reference,
            amount_minor=order_amount, currency=order_currency,
            plan_credits=balances.plan_meal_credits, actor=actor)
    elif plan.is_recurring:
        subscription = _start_or_extend_subscription(
            current, order_id, user, plan, gateway, now=now, period_start=period_start,
            period_end=period_end, gateway_subscription_id=gateway_subscription_id,
            gateway_customer_id=gateway_customer_id, audit_rows=audit_rows)
        granted = credits.reset_plan_credits(
            user_id, plan.meals_per_period, reason="subscription_start", source_key=source_key,
            subscription_id=subscription.id, order_id=order_id,
            balance_before=balances.plan_meal_credits, subscription_status=subscription.status)
        if not granted:  # a repair re-fulfilling an order whose grant is in the ledger already
            credits.set_user_columns(user_id, subscription_status=subscription.status)
            set_committed_value(user, "subscription_status", subscription.status)
    else:
        credits.add_addon_credits(user_id, plan.meals_per_period, reason="addon_pack",
                                  source_key=source_key, order_id=order_id,
                                  balance_before=balances.addon_meal_credits)
        subscription = current

    audit_rows.append(audit.entry(
        actor, "order_fulfilled", "order", order_id, user_id=user.id, order_id=order_id,
        gateway=gateway, gateway_order_id=gateway_order_id, gateway_payment_id=gateway_payment_id,
        amount_minor=amount_minor, currency=currency.upper(), plan=plan.slug))
    audit.record_all(audit_rows)
    shown_order = SimpleNamespace(id=order_id, reference=reference, paid_at=now,
                                  amount_display=format_money(order_amount, order_currency))
    if kind == ORDER_KIND_RENEWAL:
        notifications.enqueue(user, "renewal", f"renewal:{order_id}", order=shown_order,
                              subscription=subscription)
    elif not plan_change:  # a plan change queued its own "plan_changed" email
        notifications.enqueue(user, "payment_confirmed", f"payment_confirmed:{order_id}",
                              order=shown_order, plan=plan, subscription=subscription)
    db.session.commit()
    logs.bind(order_reference=reference)
    log.info("fulfilled order %s (%s %s) for user %s by %s", reference, gateway,
             gateway_order_id, user_id, actor)
    return FulfilmentResult(order_id, created=True,
                            subscription_id=subscription.id if subscription is not None else None)


def _record_refusal(gateway: str, gateway_order_id: str, error: TiffinError, actor: str) -> None:
    """Log and audit a refused fulfilment; put a possibly-paid order in review.

    A user mismatch only means the wrong person came back through the redirect;
    the real owner's webhook will still fulfil, so the order is left alone.
    """
    log.warning("fulfilment refused %s for %s:%s by %s: %s", error.code, gateway, gateway_order_id,
                actor, error.detail)
    order = find_order(gateway, gateway_order_id, for_update=True)
    if order is not None and error.code not in ("PAYMENT_USER_MISMATCH", UNMATCHED) \
            and order.status in PAYABLE:
        order.status = ORDER_NEEDS_REVIEW
        order.failure_code = error.code
        order.failure_message = error.detail
    audit.record(actor, "fulfilment_refused", "order", order.id if order else gateway_order_id,
                 user_id=order.user_id if order else None, order_id=order.id if order else None,
                 code=error.code, detail=error.detail, gateway=gateway,
                 gateway_order_id=gateway_order_id)
    db.session.commit()


def _is_unique_violation(exc: IntegrityError) -> bool:
    """True when a unique key refused the write (a race or a clash of gateway ids),
    as opposed to another constraint or a database fault that a retry may get past."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)


def _winning_order(gateway: str, gateway_order_id: str, gateway_payment_id: str | None):
    """The settled order that holds this order id, else this payment: what a
    unique-key refusal resolves to (None when neither is settled)."""
    winner = find_order(gateway, gateway_order_id)
    if (winner is None or winner.status not in SETTLED) and gateway_payment_id:
        winner = db.session.scalars(sa.select(Order).where(
            Order.gateway == gateway, Order.gateway_payment_id == gateway_payment_id)).first()
    return winner if winner is not None and winner.status in SETTLED else None


def _create_subscription_and_order(user: User, plan: MealPlan, gateway: str, gateway_order_id: str,
                                   gateway_payment_id: str | None, amount_minor: int,
                                   currency: str, *, actor: str = "system",
                                   metadata_user_id: int | None = None,
                                   gateway_customer_id: str | None = None,
                                   gateway_subscription_id: str | None = None,
                                   period_start: datetime | None = None,
                                   period_end: datetime | None = None,
                                   gateway_data: dict | None = None) -> FulfilmentResult:
    """Record a paid order and create or extend its subscription, in one transaction.

    Args:
        user: who the payment is for (the order's owner, or the signed-in shopper).
        plan: the plan or add-on pack paid for.
        gateway, gateway_order_id: the idempotency key; a second call with the same
            pair returns the first call's order and subscription and changes nothing.
        gateway_payment_id, amount_minor, currency: what the gateway says was paid.
        actor: who is asking ("webhook:stripe", "user:12", "cli:fix"), for the audit log.
        metadata_user_id: the user id the gateway's metadata names, if any.
        period_start, period_end: the gateway's billing period, when it keeps one.

    Credits: a new subscription sets the plan bucket to the plan's meals per period
    (an extension does the same); an add-on pack adds its meals.

    Raises:
        TiffinError PAYMENT_USER_MISMATCH, PAYMENT_AMOUNT_MISMATCH or PLAN_INACTIVE;
        nothing is fulfilled, the refusal is logged and audited, and an order that
        may hold money is set to needs_review for the monitor to report.
    """
    kwargs = dict(actor=actor, metadata_user_id=metadata_user_id,
                  gateway_customer_id=gateway_customer_id,
                  gateway_subscription_id=gateway_subscription_id, period_start=period_start,
                  period_end=period_end, gateway_data=gateway_data)
    for attempt in range(_SQLITE_LOCK_RETRIES):
        try:
            return _fulfil_once(user, plan, gateway, gateway_order_id, gateway_payment_id,
                                amount_minor, currency, **kwargs)
        except IntegrityError as exc:
            # A concurrent caller inserted the same order/subscription/grant first.
            db.session.rollback()
            winner = _winning_order(gateway, gateway_order_id, gateway_payment_id)
            if winner is not None:
                return _settled_result(winner, user)
            if not _is_unique_violation(exc):
                raise  # a fault, not a race (a failed write): the caller's retry finishes it
            if attempt >= 2:
                # No settled row won: refuse with a code (order to review), never a 500.
                error = TiffinError("PAYMENT_CONFLICT", f"{gateway}:{gateway_order_id} payment "
                                    f"{gateway_payment_id}: {getattr(exc, 'orig', exc)}")
                _record_refusal(gateway, gateway_order_id, error, actor)
                raise error from exc
        except TiffinError as error:
            db.session.rollback()
            _record_refusal(gateway, gateway_order_id, error, actor)
            raise
        except OperationalError as exc:
            # SQLite (development) refuses a second writer instead of waiting.
            db.session.rollback()
            if db.engine.dialect.name != "sqlite" or "locked" not in str(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
        except Exception:
            db.session.rollback()
            raise
    raise RuntimeError(f"could not fulfil {gateway}:{gateway_order_id}: database stayed locked")
