"""Repairs for what the monitor finds. Each repair is one transaction with an audit entry.

- A paid order with no subscription is fulfilled again through
  `_create_subscription_and_order`, the same helper every payment path uses,
  so a repair racing a late webhook leaves exactly one subscription. For a
  gateway that bills the plan itself (Stripe, Razorpay) the new subscription is
  linked to the gateway's — the id the order recorded, else the gateway asked
  once — so its renewals, cancellations and plan changes still find it.
- A live gateway-billed subscription without the gateway's id (made by an
  older repair) is linked the same way.
- Status and credit drift: a user's denormalised `subscription_status` is
  recomputed from the subscription rows (`lifecycle.sync_user_status`) and the
  credit balances are set back to the credit ledger's last `balance_after`.
- A paid order recorded against the wrong user is moved, with its subscription
  and the credits it bought, to the right one.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Callable

import sqlalchemy as sa

from app.errors import TiffinError
from app.extensions import db
from app.gateways import GATEWAY_BILLED, get_gateway, recorded_subscription_id
from app.gateways.base import RemoteSubscription
from app.models import CreditLedgerEntry, MealPlan, Order, Subscription, User
from app.models.ledger import BUCKET_ADDON, BUCKET_PLAN
from app.models.order import (ORDER_KIND_RENEWAL, ORDER_NEEDS_REVIEW, ORDER_PAID,
                              ORDER_PARTIALLY_REFUNDED)
from app.models.subscription import (LIVE_STATUSES, SUB_CANCELED, SUB_COMPLETED, SUB_PAST_DUE,
                                     SUB_UNPAID)
from app.models.types import utcnow
from app.services import audit, credits, lifecycle, monitoring, webhook_inbox
from app.services.fulfilment import _create_subscription_and_order, lock_user

log = logging.getLogger("tiffin.repair")
PAID_STATUSES = (ORDER_PAID, ORDER_PARTIALLY_REFUNDED)
ALL_ROWS = 10 ** 9  # sync works through every drifted user, not just the monitor's first page
# Gateway states a repaired subscription takes on; otherwise a paid plan starts active.
REMOTE_STATES_TO_APPLY = (SUB_PAST_DUE, SUB_UNPAID, SUB_CANCELED, SUB_COMPLETED)


class RepairError(RuntimeError):
    """The repair cannot be done as asked; the message says why."""


@dataclass
class RepairResult:
    kind: str          # missing_subscription | unlinked_subscription | status_drift | move_order
    target: str        # order reference or user id
    action: str        # what was (or, in a dry run, would be) done
    changed: bool = False
    error: str | None = None
    diff: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _lock_users(*user_ids: int) -> None:
    """Lock users in id order (the order fulfilment uses), so repairs never deadlock."""
    for user_id in sorted(set(user_ids)):
        lock_user(user_id)


def _lock_order(order_id: int) -> Order | None:
    return db.session.scalars(sa.select(Order).where(Order.id == order_id).with_for_update()
                              .execution_options(populate_existing=True)).first()


def _has_own_subscription(order_id: int) -> bool:
    return db.session.scalar(sa.select(sa.literal(True)).where(
        Subscription.order_id == order_id)) is not None


def _findings(check: str, limit: int | None = None, **overrides) -> list[monitoring.Finding]:
    found, _ = monitoring.run_check(monitoring.get_check(check), limit=limit, overrides=overrides)
    db.session.rollback()
    return [f for f in found if not f.key.endswith(":more")]


def missing_subscription_findings() -> list[monitoring.Finding]:
    # No grace period here, unlike the monitor's alert: fulfilment marks an order paid and
    # creates its subscription in one transaction, so a paid order without one is never
    # half-way; and the repair locks the order and looks again before it acts.
    return _findings("paid_without_subscription", paid_cutoff=utcnow())


def unlinked_subscription_findings() -> list[monitoring.Finding]:
    return _findings("subscription_without_gateway_id", limit=ALL_ROWS)


@dataclass
class GatewayLink:
    """The gateway subscription behind a paid plan order, as far as we could learn it."""

    subscription_id: str | None
    remote: RemoteSubscription | None = None
    error: str | None = None  # why the gateway could not be asked


def gateway_link(order: Order) -> GatewayLink:
    """What the order recorded, and the gateway's current view (asked once).

    Call it outside any lock: it may wait on the gateway. A gateway that bills no
    subscription (the test gateway) gives an empty link.
    """
    known = recorded_subscription_id(order)
    if order.gateway not in GATEWAY_BILLED:
        return GatewayLink(known)
    try:
        remote = get_gateway(order.gateway).subscription_for_order(order, known_id=known)
    except TiffinError as exc:
        log.warning("repair could not ask %s about order %s: %s", order.gateway, order.reference,
                    exc.detail)
        return GatewayLink(known, error=f"{exc.code}: {exc.detail}")
    return GatewayLink(remote.id if remote is not None else known, remote)


def _link_problem(order: Order, link: GatewayLink, subscription_id: int | None = None) -> str | None:
    """Why this link cannot be used, or None."""
    if order.gateway not in GATEWAY_BILLED:
        return None
    if not link.subscription_id:
        return (f"not linked to a {order.gateway} subscription: "
                + (link.error or f"{order.gateway} names none for order {order.reference}")
                + "; run the repair again when the gateway answers")
    holder = lifecycle.find_subscription(order.gateway, link.subscription_id)
    if holder is not None and holder.id != subscription_id:
        return (f"{order.gateway} subscription {link.subscription_id} is already linked to "
                f"subscription {holder.id}")
    return None


def _apply_remote_state(subscription_id: int, link: GatewayLink, actor: str) -> None:
    """A gateway subscription that is past due, ended or cancelling: ours follows it."""
    remote = link.remote
    if remote is None or (remote.status not in REMOTE_STATES_TO_APPLY
                          and not remote.cancel_at_period_end):
        return
    status = remote.status if remote.status in REMOTE_STATES_TO_APPLY else None
    subscription = db.session.get(Subscription, subscription_id)
    lifecycle.apply_remote_state(subscription, status=status or subscription.status,
                                 event_at=None, actor=actor,
                                 cancel_at_period_end=remote.cancel_at_period_end)


def drift_findings(limit: int | None = None) -> list[monitoring.Finding]:
    return _findings("user_status_drift", limit=limit)


def fix_missing_subscription(order_id: int, *, dry_run: bool = False,
                             actor: str = "cli:fix") -> RepairResult:
    """Fulfil a paid order that has no subscription, through the one fulfilment helper,
    linked to the gateway's subscription when the gateway bills the plan."""
    order = db.session.get(Order, order_id)
    result = RepairResult("missing_subscription", order.reference if order else str(order_id),
                          "create the missing subscription")
    if order is None:
        result.error = "order not found"
        return result
    if not order.gateway_order_id:
        result.error = "order has no gateway order id; fulfil it by hand"
        return result
    if order.gateway in GATEWAY_BILLED:
        result.action += f", linked to its {order.gateway} subscription"
    if dry_run:
        db.session.rollback()
        return result
    link = gateway_link(order)
    problem = _link_problem(order, link)
    db.session.rollback()  # no read transaction held open across the gateway call
    _lock_users(order.user_id)
    order = _lock_order(order_id)
    if order.status not in PAID_STATUSES or order.kind == ORDER_KIND_RENEWAL \
            or _has_own_subscription(order.id):
        db.session.rollback()  # a webhook or another run fixed it meanwhile
        result.action = "nothing to do (already fixed)"
        return result
    previous_status, previous_paid_at = order.status, order.paid_at
    # The helper only fulfils an order that is not yet settled: re-open it inside this
    # transaction, so a failure rolls back to `paid` and a racing webhook waits on the lock.
    order.status = ORDER_NEEDS_REVIEW
    audit.record(actor, "order_reopened_for_repair", "order", order.id, user_id=order.user_id,
                 order_id=order.id, previous_status=previous_status,
                 previous_paid_at=previous_paid_at.isoformat() if previous_paid_at else None)
    db.session.flush()
    user, plan = db.session.get(User, order.user_id), db.session.get(MealPlan, order.meal_plan_id)
    linked_id = link.subscription_id if problem is None else None
    remote = link.remote if problem is None else None
    try:
        fulfilled = _create_subscription_and_order(
            user, plan, order.gateway, order.gateway_order_id, order.gateway_payment_id,
            order.amount_minor, order.currency, actor=actor,
            metadata_user_id=order.gateway_metadata_user_id,
            gateway_customer_id=order.gateway_customer_id or (remote.customer_id if remote else None),
            gateway_subscription_id=linked_id,
            period_start=remote.period_start if remote else None,
            period_end=remote.period_end if remote else None)
    except TiffinError as exc:
        result.error = f"{exc.code}: {exc.detail}"
        return result
    subscription_id = fulfilled.subscription_id
    result.changed = fulfilled.created
    result.error = problem  # access is given either way; an unlinked one stays on the monitor
    result.diff = {"subscription_id": subscription_id, "order_kind": fulfilled.order.kind,
                   "gateway_subscription_id": linked_id}
    if fulfilled.created and subscription_id is not None and linked_id:
        _follow_gateway(subscription_id, order.gateway, link, actor, result)
    return result


def _follow_gateway(subscription_id: int, gateway: str, link: GatewayLink, actor: str,
                    result: RepairResult) -> None:
    """Once linked: take on the gateway's state, and re-run the webhooks that failed
    for want of the link (a renewal paid meanwhile is granted now)."""
    _apply_remote_state(subscription_id, link, actor)
    replayed = webhook_inbox.replay_failed_mentioning(gateway, link.subscription_id)
    if replayed:
        result.diff["events_replayed"] = replayed


def link_gateway_subscription(subscription_id: int, *, dry_run: bool = False,
                              actor: str = "cli:fix") -> RepairResult:
    """Give a live gateway-billed subscription the gateway's subscription id it lacks."""
    subscription = db.session.get(Subscription, subscription_id)
    order = db.session.get(Order, subscription.order_id)
    result = RepairResult("unlinked_subscription", order.reference,
                          f"link subscription {subscription.id} to its {subscription.gateway} "
                          "subscription")
    if dry_run:
        db.session.rollback()
        return result
    link = gateway_link(order)
    problem = _link_problem(order, link, subscription.id)
    db.session.rollback()
    if problem is not None:
        result.error = problem
        return result
    locked = lifecycle._lock(subscription)
    if locked.gateway_subscription_id or locked.status not in LIVE_STATUSES:
        db.session.rollback()
        result.action = "nothing to do (already linked or ended)"
        return result
    locked.gateway_subscription_id = link.subscription_id
    remote = link.remote
    if remote is not None:
        locked.gateway_customer_id = locked.gateway_customer_id or remote.customer_id
        if remote.period_end is not None:
            locked.current_period_start = remote.period_start or locked.current_period_start
            locked.current_period_end = remote.period_end
    result.diff = {"subscription_id": locked.id, "gateway_subscription_id": link.subscription_id}
    audit.record(actor, "subscription_linked_to_gateway", "subscription", locked.id,
                 user_id=locked.user_id, order_id=order.id, gateway=locked.gateway,
                 gateway_subscription_id=link.subscription_id)
    db.session.commit()
    result.changed = True
    _follow_gateway(subscription_id, order.gateway, link, actor, result)
    return result


def _ledger_balance(user_id: int, bucket: str) -> int:
    return db.session.scalar(sa.select(CreditLedgerEntry.balance_after).where(
        CreditLedgerEntry.user_id == user_id, CreditLedgerEntry.bucket == bucket)
        .order_by(CreditLedgerEntry.id.desc()).limit(1)) or 0


def _expected_status(user_id: int) -> str:
    subs = db.session.execute(sa.select(Subscription.id, Subscription.status).where(
        Subscription.user_id == user_id).order_by(Subscription.id.desc())).all()
    live = next((s for s in subs if s.status in LIVE_STATUSES), None)
    return (live or subs[0]).status if subs else "none"


def repair_user_drift(user_id: int, *, dry_run: bool = False, actor: str = "cli:sync") -> RepairResult:
    """Recompute one user's status from the subscriptions and credits from the ledger."""
    _lock_users(user_id)
    user = db.session.scalars(sa.select(User).where(User.id == user_id)
                              .execution_options(populate_existing=True)).one()
    expected = {"subscription_status": _expected_status(user_id),
                "plan_meal_credits": _ledger_balance(user_id, BUCKET_PLAN),
                "addon_meal_credits": _ledger_balance(user_id, BUCKET_ADDON)}
    diff = {k: {"old": getattr(user, k), "new": v} for k, v in expected.items()
            if getattr(user, k) != v}
    result = RepairResult("status_drift", str(user_id), "recompute status and credits", diff=diff)
    if dry_run or not diff:
        db.session.rollback()
        if not diff:
            result.action = "nothing to do (already in step)"
        return result
    lifecycle.sync_user_status(user_id)
    db.session.execute(sa.update(User).where(User.id == user_id).values(
        plan_meal_credits=expected["plan_meal_credits"],
        addon_meal_credits=expected["addon_meal_credits"])
        .execution_options(synchronize_session="fetch"))
    audit.record(actor, "user_status_repaired", "user", user_id, user_id=user_id, diff=diff)
    db.session.commit()
    result.changed = True
    return result


def _run(items, fn, progress):
    results = []
    for item in (progress(items) if progress else items):
        try:
            results.append(fn(item))
        except Exception as exc:  # one bad row must not stop the repair of the others
            db.session.rollback()
            log.exception("repair of %s failed", item)
            results.append(RepairResult("error", str(item), "repair", error=str(exc)))
    return results


def fix_failed_subscriptions(*, dry_run: bool = False, actor: str = "cli:fix",
                             progress: Callable | None = None) -> list[RepairResult]:
    """Create every missing subscription, link the unlinked ones, then repair status drift."""
    # Listed first: a subscription this run creates but cannot link is reported once, not twice.
    unlinked = [f.details["id"] for f in unlinked_subscription_findings()]
    missing = [f.details["id"] for f in missing_subscription_findings()]
    results = _run(missing, lambda oid: fix_missing_subscription(oid, dry_run=dry_run, actor=actor),
                   progress)
    results += _run(unlinked, lambda sid: link_gateway_subscription(sid, dry_run=dry_run,
                                                                    actor=actor), progress)
    return results + sync_subscription_status(dry_run=dry_run, actor=actor, progress=progress)


def sync_subscription_status(*, dry_run: bool = False, actor: str = "cli:sync",
                             progress: Callable | None = None) -> list[RepairResult]:
    """Bring every drifted user back in step; the set-based query finds them."""
    users = [f.details["id"] for f in drift_findings(limit=ALL_ROWS)]
    return _run(users, lambda uid: repair_user_drift(uid, dry_run=dry_run, actor=actor), progress)


def _move_credits(from_user: int, to_user: int, bucket: str, amount: int, order: Order,
                  actor: str) -> int:
    """Move up to `amount` credits of one bucket, writing a ledger row on each side."""
    column = User.plan_meal_credits if bucket == BUCKET_PLAN else User.addon_meal_credits
    available = db.session.scalar(sa.select(column).where(User.id == from_user)) or 0
    moved = min(amount, available)
    if moved <= 0:
        return 0
    key = f"move:{order.id}:{bucket}:{from_user}:{to_user}"
    credits._apply(from_user, column, bucket, lambda current: current - moved,
                   reason="moved_to_other_user", source_key=key + ":out", order_id=order.id)
    credits._apply(to_user, column, bucket, lambda current: current + moved,
                   reason="moved_from_other_user", source_key=key + ":in", order_id=order.id)
    return moved


def fix_payment_user_mismatch(reference: str, email: str, *, dry_run: bool = False,
                              actor: str = "cli:fix-mismatch") -> RepairResult:
    """Move a paid order (its subscription, renewals and credits) to the user `email`.

    Raises RepairError when the order or user is unknown, the order is not paid,
    is a renewal, or the target already holds a live subscription.
    """
    order = db.session.scalars(sa.select(Order).where(Order.reference == reference)).first()
    target = db.session.scalars(sa.select(User).where(
        sa.func.lower(User.email) == email.strip().lower())).first()
    if order is None:
        raise RepairError(f"no order with reference {reference}")
    if target is None:
        raise RepairError(f"no user with email {email}")
    result = RepairResult("move_order", reference, f"move order to user {target.id} ({target.email})")
    if order.user_id == target.id:
        result.action = "nothing to do (order already belongs to this user)"
        return result
    _lock_users(order.user_id, target.id)
    order = _lock_order(order.id)
    if order.status not in PAID_STATUSES:
        db.session.rollback()
        raise RepairError(f"order {reference} is {order.status}; only paid orders are moved "
                          "(an unpaid order is fulfilled by its webhook or by reconcile)")
    if order.kind == ORDER_KIND_RENEWAL:
        db.session.rollback()
        raise RepairError(f"order {reference} is a renewal; move the order that started the "
                          "subscription instead")
    source = order.user_id
    subscription = db.session.scalars(sa.select(Subscription).where(
        Subscription.order_id == order.id)).first()
    if subscription is not None and subscription.status in LIVE_STATUSES and \
            db.session.scalar(sa.select(sa.func.count()).select_from(Subscription).where(
                Subscription.user_id == target.id, Subscription.status.in_(LIVE_STATUSES))):
        db.session.rollback()
        raise RepairError(f"user {target.email} already has a live subscription; end one first")
    plan = db.session.get(MealPlan, order.meal_plan_id)
    renewals = db.session.scalars(sa.select(Order.id).where(Order.parent_order_id == order.id)).all()
    result.diff = {"order": reference, "from_user_id": source, "to_user_id": target.id,
                   "subscription_id": subscription.id if subscription else None,
                   "renewal_orders": len(renewals), "gateway_metadata_user_id":
                   order.gateway_metadata_user_id}
    if dry_run:
        db.session.rollback()
        return result
    order.user_id = target.id
    if renewals:
        db.session.execute(sa.update(Order).where(Order.id.in_(renewals)).values(user_id=target.id)
                           .execution_options(synchronize_session=False))
    moved = {}
    if subscription is not None:
        subscription.user_id = target.id
        db.session.flush()
        if subscription.status in LIVE_STATUSES:
            moved["plan"] = _move_credits(source, target.id, BUCKET_PLAN,
                                          plan.meals_per_period, order, actor)
    elif not plan.is_recurring:
        moved["addon"] = _move_credits(source, target.id, BUCKET_ADDON, plan.meals_per_period,
                                       order, actor)
    db.session.flush()
    lifecycle.sync_user_status(source)
    lifecycle.sync_user_status(target.id)
    result.diff["credits_moved"] = moved
    audit.record(actor, "order_moved_to_user", "order", order.id, user_id=target.id,
                 order_id=order.id, **result.diff)
    audit.record(actor, "order_moved_from_user", "user", source, user_id=source, order_id=order.id,
                 to_user_id=target.id)
    db.session.commit()
    result.changed = True
    return result
