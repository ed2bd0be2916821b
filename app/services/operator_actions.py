"""What an operator does from the console, through the same services as the CLI.

The console adds no second way to change money or access: a repair is
`repair.fix_missing_subscription` / `repair_user_drift` / `fix_payment_user_mismatch`
or `reconcile.reconcile_order` (the CLI's `fix …` and `reconcile --fix`), a replay
is `webhook_inbox.replay`, a refund is `refunds.refund_order`, a resend goes
through `notifications.send_pending`. Each action holds the CLI's job lock where
the CLI does, and is written to the audit log as `ops_<action>` with the
operator's id, the target, and the target's state before and after.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import MonitorRun, NotificationOutbox, Order, Subscription, User, WebhookEvent
from app.models.ops import OUTBOX_FAILED, OUTBOX_PENDING
from app.models.types import utcnow
from app.services import audit, console, monitoring, notifications, reconcile, refunds, repair
from app.services import webhook_inbox
from app.services.job_lock import JobLocked, job_lock

log = logging.getLogger("tiffin.ops")
RUN_STALE_SECONDS = 600  # a console-started run not finished by then is taken as dead


class ActionRefused(Exception):
    """The action cannot be done as asked; the message says why (shown to the operator)."""


def actor_of(operator: User) -> str:
    return f"operator:{operator.id}"


def _audit(operator: User, action: str, entity_type: str, entity_id, *, before, after,
           user_id=None, order_id=None, **details) -> None:
    """One `ops_<action>` entry in its own transaction, after the service has committed."""
    audit.record(actor_of(operator), f"ops_{action}", entity_type, entity_id, user_id=user_id,
                 order_id=order_id, operator_id=operator.id, before=before, after=after,
                 **details)
    db.session.commit()


# --- snapshots (before / after) -----------------------------------------------------

def order_state(order_id: int) -> dict:
    order = db.session.get(Order, order_id, populate_existing=True)
    subscription_id = db.session.scalar(sa.select(Subscription.id).where(
        Subscription.order_id == order_id))
    return {"status": order.status, "user_id": order.user_id,
            "refunded_minor": order.refunded_minor, "subscription_id": subscription_id}


def user_state(user_id: int) -> dict:
    user = db.session.get(User, user_id, populate_existing=True)
    return {"subscription_status": user.subscription_status,
            "plan_meal_credits": user.plan_meal_credits,
            "addon_meal_credits": user.addon_meal_credits}


def event_state(event_pk: int) -> dict:
    event = db.session.get(WebhookEvent, event_pk, populate_existing=True)
    return {"status": event.status, "attempts": event.attempts, "last_error": event.last_error}


# --- monitor run -------------------------------------------------------------------

def start_monitor_run(operator: User) -> MonitorRun:
    """Start the monitor's checks without waiting for them (a thread records the run);
    a run already in progress is returned instead of starting a second one."""
    recent = utcnow() - timedelta(seconds=RUN_STALE_SECONDS)
    running = db.session.scalars(sa.select(MonitorRun).where(
        MonitorRun.finished_at.is_(None), MonitorRun.started_at >= recent)
        .order_by(MonitorRun.id.desc()).limit(1)).first()
    if running is not None:
        return running
    run = MonitorRun(started_at=utcnow(), summary={"started_by": actor_of(operator)})
    db.session.add(run)
    db.session.flush()
    run_id = run.id
    audit.record(actor_of(operator), "ops_monitor_run_started", "monitor_run", run_id,
                 operator_id=operator.id, before=None, after={"run_id": run_id})
    db.session.commit()
    app = current_app._get_current_object()
    if app.config.get("OPS_MONITOR_INLINE"):
        _finish_run(app, run_id)
    else:
        threading.Thread(target=_finish_run, args=(app, run_id), daemon=True,
                         name=f"monitor-run-{run_id}").start()
    return db.session.get(MonitorRun, run_id)


def _finish_run(app, run_id: int) -> None:
    with app.app_context():
        try:
            report = monitoring.run_checks()
            monitoring.record_run(report, run_id=run_id)
        except Exception:  # the page shows the run as unfinished; the log says why
            db.session.rollback()
            log.exception("console monitor run %s failed", run_id)
        finally:
            db.session.remove()


def refresh_findings(check_names: list[str]) -> None:
    """Re-run these checks (one indexed query each) into the latest run, so the page
    after a repair shows what is still wrong, not what was."""
    run = console.latest_finished_run()
    if run is None or not run.summary:
        return
    summary = dict(run.summary)
    kept = [f for f in summary.get("findings") or [] if f["check"] not in check_names]
    counts = dict(summary.get("counts") or {})
    for name in check_names:
        found, total = monitoring.run_check(monitoring.get_check(name))
        kept += [f.__dict__ for f in found]
        counts[name] = total
    summary["findings"], summary["counts"] = kept, counts
    summary["critical"] = sum(f["severity"] == monitoring.CRITICAL for f in kept)
    summary["warning"] = sum(f["severity"] == monitoring.WARNING for f in kept)
    run = db.session.get(MonitorRun, run.id)
    run.summary = summary
    db.session.commit()


# --- repairs -------------------------------------------------------------------------

@dataclass
class RepairOutcome:
    kind: str
    target: str
    dry_run: bool
    lines: list[str] = field(default_factory=list)  # what would / did change, in words
    changed: bool = False
    error: str | None = None
    diff: dict = field(default_factory=dict)


@dataclass
class RepairKind:
    title: str
    checks: list[str]
    lock: str
    run: Callable  # (target, dry_run, actor, options) -> RepairOutcome
    entity: Callable  # target -> (entity_type, id, user_id, order_id, snapshot fn)


def _order_by_reference(reference: str) -> Order:
    order = db.session.scalars(sa.select(Order).where(Order.reference == reference)).first()
    if order is None:
        raise ActionRefused(f"no order {reference}")
    return order


def _from_repair_result(kind: str, target: str, dry_run: bool, result) -> RepairOutcome:
    outcome = RepairOutcome(kind, target, dry_run, changed=result.changed, error=result.error,
                            diff=result.diff)
    outcome.lines.append(("Would " if dry_run else "Done: ") + result.action
                         if not result.action.startswith("nothing") else result.action)
    for key, change in (result.diff or {}).items():
        if isinstance(change, dict) and {"old", "new"} <= set(change):
            outcome.lines.append(f"{key}: {change['old']} → {change['new']}")
        else:
            outcome.lines.append(f"{key}: {change}")
    return outcome


def _missing_subscription(target, dry_run, actor, options):
    order = _order_by_reference(target)
    plan = order.meal_plan
    result = repair.fix_missing_subscription(order.id, dry_run=dry_run, actor=actor)
    outcome = _from_repair_result("missing-subscription", target, dry_run, result)
    if dry_run and not result.error:
        outcome.lines.append(f"a {plan.name} subscription for user {order.user_id} from order "
                             f"{order.reference}, with {plan.meals_per_period} meal credits")
    return outcome


def _status_drift(target, dry_run, actor, options):
    result = repair.repair_user_drift(int(target), dry_run=dry_run, actor=actor)
    return _from_repair_result("status-drift", target, dry_run, result)


def _payment_user_mismatch(target, dry_run, actor, options):
    email = (options.get("email") or "").strip()
    if not email:
        order = _order_by_reference(target)
        payer = db.session.get(User, order.gateway_metadata_user_id) \
            if order.gateway_metadata_user_id else None
        if payer is None:
            raise ActionRefused("the gateway's metadata names no user we know; give an email")
        email = payer.email
    try:
        result = repair.fix_payment_user_mismatch(target, email, dry_run=dry_run, actor=actor)
    except repair.RepairError as exc:
        raise ActionRefused(str(exc)) from exc
    outcome = _from_repair_result("payment-user-mismatch", target, dry_run, result)
    outcome.diff["email"] = email
    return outcome


def _reconcile_order(target, dry_run, actor, options):
    try:
        report = reconcile.reconcile_order(target, fix=not dry_run, actor=actor)
    except LookupError as exc:
        raise ActionRefused(str(exc)) from exc
    outcome = RepairOutcome("reconcile-order", target, dry_run)
    outcome.error = "; ".join(report.errors) or None
    for d in report.discrepancies:
        verb = "would fulfil" if dry_run and d.kind == reconcile.PAID_NOT_RECORDED else \
            "fulfilled" if d.fixed else "report"
        outcome.lines.append(f"{d.kind}: {d.detail} ({verb})" + (f" — {d.error}" if d.error else ""))
        outcome.changed = outcome.changed or d.fixed
    if not report.discrepancies and not report.errors:
        outcome.lines.append(f"the gateway ({', '.join(report.checked) or 'none'}) and we agree "
                             "about this order: nothing to do")
    return outcome


def _order_entity(target):
    order = _order_by_reference(target)
    return "order", order.id, order.user_id, order.id, lambda: order_state(order.id)


def _user_entity(target):
    user = db.session.get(User, int(target)) if str(target).isdigit() else None
    if user is None:
        raise ActionRefused(f"no user {target}")
    return "user", user.id, user.id, None, lambda: user_state(user.id)


REPAIRS: dict[str, RepairKind] = {
    "missing-subscription": RepairKind("Create the missing subscription (fix subscriptions)",
                                       ["paid_without_subscription", "user_status_drift"], "fix",
                                       _missing_subscription, _order_entity),
    "status-drift": RepairKind("Recompute status and credits (fix sync-status)",
                               ["user_status_drift"], "sync-status", _status_drift, _user_entity),
    "payment-user-mismatch": RepairKind("Move the order to the user who paid "
                                        "(fix payment-user-mismatch)",
                                        ["payment_user_mismatch", "user_status_drift"],
                                        "fix-payment-user-mismatch", _payment_user_mismatch,
                                        _order_entity),
    "reconcile-order": RepairKind("Ask the gateway and fulfil what it took (reconcile --fix)",
                                  ["paid_without_subscription", "order_needs_review",
                                   "authorized_not_captured", "order_pending_too_long"],
                                  "reconcile", _reconcile_order, _order_entity),
}


def repair_kind(kind: str) -> RepairKind:
    if kind not in REPAIRS:
        raise ActionRefused(f"unknown repair {kind}")
    return REPAIRS[kind]


def preview_repair(kind: str, target: str, options: dict | None = None) -> RepairOutcome:
    """The dry run: what the repair would change, changing nothing."""
    spec = repair_kind(kind)
    spec.entity(target)
    return spec.run(target, True, "console:dry-run", options or {})


def run_repair(kind: str, target: str, operator: User, options: dict | None = None
               ) -> RepairOutcome:
    """The repair for real, under the CLI's job lock, audited with before and after."""
    spec = repair_kind(kind)
    entity_type, entity_id, user_id, order_id, snapshot = spec.entity(target)
    before = snapshot()
    db.session.rollback()
    try:
        with job_lock(spec.lock):
            outcome = spec.run(target, False, actor_of(operator), options or {})
    except JobLocked as exc:
        raise ActionRefused(f"another {spec.lock} run is in progress ({exc}); try again in a "
                            "minute") from exc
    after = snapshot()
    _audit(operator, "repair", entity_type, entity_id, before=before, after=after,
           user_id=after.get("user_id", user_id), order_id=order_id, repair=kind,
           target=target, changed=outcome.changed, error=outcome.error, lines=outcome.lines)
    refresh_findings(spec.checks)
    return outcome


# --- webhooks, emails, refunds -------------------------------------------------------

def replay_event(event_pk: int, operator: User) -> str:
    """`flask webhooks replay` for one event, audited."""
    event = db.session.get(WebhookEvent, event_pk)
    if event is None:
        raise ActionRefused(f"no webhook event {event_pk}")
    before = event_state(event_pk)
    status = webhook_inbox.replay(event)
    after = event_state(event_pk)
    _audit(operator, "webhook_replayed", "webhook_event", event_pk, before=before, after=after,
           gateway_event_id=event.event_id, gateway=event.gateway)
    refresh_findings(["webhook_events"])
    return status


def resend_emails(operator: User, email_id: int | None = None) -> notifications.SendReport:
    """Put one failed/stuck email (or all of them) back in the outbox as due now, then
    send through the outbox sender; audited with each email's state before and after."""
    rows = [db.session.get(NotificationOutbox, email_id)] if email_id else \
        console.outbox_problems(limit=1000)
    rows = [r for r in rows if r is not None and r.status in (OUTBOX_FAILED, OUTBOX_PENDING)]
    if not rows:
        raise ActionRefused("no failed or stuck email to resend")
    before = {r.id: {"status": r.status, "attempts": r.attempts} for r in rows}
    for row in rows:
        row.status, row.attempts, row.next_attempt_at = OUTBOX_PENDING, 0, utcnow()
    db.session.commit()
    report = notifications.send_pending(limit=len(rows))
    after = {i: {"status": s, "attempts": a} for i, s, a in db.session.execute(
        sa.select(NotificationOutbox.id, NotificationOutbox.status, NotificationOutbox.attempts)
        .where(NotificationOutbox.id.in_(list(before)))).all()}
    _audit(operator, "emails_resent", "notification_outbox", email_id, before=before,
           after=after, sent=report.sent, server_error=report.server_error)
    refresh_findings(["notification_outbox"])
    return report


def refund(reference: str, amount_minor: int | None, typed_reference: str, operator: User
           ) -> refunds.RefundOutcome:
    """`flask orders refund` for one order, after the operator typed its reference."""
    if (typed_reference or "").strip().upper() != reference.upper():
        raise ActionRefused("the reference typed does not match this order; nothing was refunded")
    order = _order_by_reference(reference)
    before = order_state(order.id)
    try:
        outcome = refunds.refund_order(reference, amount_minor, actor=actor_of(operator))
    except refunds.RefundRefused as exc:
        raise ActionRefused(str(exc)) from exc
    after = order_state(order.id)
    _audit(operator, "refund", "order", order.id, before=before, after=after,
           user_id=order.user_id, order_id=order.id, amount_minor=outcome.amount_minor,
           refund_id=outcome.refund_id, gateway_status=outcome.gateway_status)
    return outcome
