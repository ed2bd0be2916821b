"""The payment/subscription monitor: set-based checks, alert de-duplication, alert delivery.

Each check is ONE SQL query over indexed columns that returns only the problem
rows (capped at MONITOR_MAX_FINDINGS_PER_CHECK), so the monitor's time follows
the database's and its memory follows the number of problems, not the table
size. Every problem row becomes a Finding with a stable alert key
("<check>:<id>") and a fingerprint of the facts that matter; `monitor_alerts`
remembers what was sent, so a repeated run re-sends a finding only when it is
new, has changed, came back after being resolved, or is older than
ALERT_REMINDER_HOURS.

Exit codes: 0 healthy, 1 warnings only, 2 a critical finding (money taken,
nothing given), 3 an alert could not be delivered, 4 another run holds the lock.
"""
from __future__ import annotations

import hashlib
import json
import logging
import smtplib
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Callable, Iterable

import requests
import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.gateways import GATEWAY_BILLED, available_gateways
from app.models import MonitorAlert, MonitorRun
from app.models.types import UTCDateTime, utcnow
from app.services import audit

log = logging.getLogger("tiffin.monitoring")

CRITICAL = "critical"
WARNING = "warning"
EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_ALERT_FAILED, EXIT_LOCKED = 0, 1, 2, 3, 4
LIVE_SQL = "('active', 'trialing', 'past_due')"
PAID_SQL = "('paid', 'partially_refunded')"
UNPAID_SQL = "('pending', 'failed', 'canceled', 'needs_review')"
GATEWAY_BILLED_SQL = "(" + ", ".join(f"'{name}'" for name in GATEWAY_BILLED) + ")"
MAX_LINES_PER_MESSAGE = 200


@dataclass
class Finding:
    check: str
    severity: str
    key: str
    summary: str
    details: dict = field(default_factory=dict)
    fingerprint: str = ""


@dataclass
class Check:
    name: str
    severity: str  # default; a query may return its own `severity` column
    title: str
    sql: str
    summary: str  # str.format over the row
    fingerprint: tuple[str, ...] = ()
    params: Callable[[dict], dict] | None = None  # extra parameters from the settings
    action: str = ""  # what the operator should do about a finding


@dataclass
class Report:
    findings: list[Finding]
    counts: dict  # check -> total problem rows (may exceed the findings listed)
    timings_ms: dict
    started_at: datetime
    duration_ms: int = 0
    alert_errors: list[str] = field(default_factory=list)
    alerts_sent: int = 0
    run_id: int | None = None

    @property
    def exit_code(self) -> int:
        # A critical finding always exits 2, the contract outside checks rely on; an
        # alert that could not be sent then shows on stderr and is retried next run.
        if any(f.severity == CRITICAL for f in self.findings):
            return EXIT_CRITICAL
        if self.alert_errors:
            return EXIT_ALERT_FAILED
        return EXIT_WARNING if self.findings else EXIT_OK

    @property
    def actions(self) -> dict:
        """What to do, for each check with findings that says."""
        return {c.name: c.action for c in CHECKS
                if c.action and any(f.check == c.name for f in self.findings)}

    def as_dict(self) -> dict:
        return {"exit_code": self.exit_code, "started_at": self.started_at.isoformat(),
                "duration_ms": self.duration_ms, "counts": self.counts,
                "critical": sum(f.severity == CRITICAL for f in self.findings),
                "warning": sum(f.severity == WARNING for f in self.findings),
                "alerts_sent": self.alerts_sent, "alert_errors": self.alert_errors,
                "actions": self.actions,
                "findings": [asdict(f) for f in self.findings]}


def _ago(**kwargs) -> datetime:
    return utcnow() - timedelta(**kwargs)


CHECKS: list[Check] = [
    Check("paid_without_subscription", CRITICAL, "Paid orders with no subscription",
          f"""SELECT o.id, o.reference, o.user_id, o.gateway, o.gateway_order_id, o.amount_minor,
                     o.currency, o.paid_at, count(*) OVER () AS total
              FROM orders o
              WHERE o.status IN {PAID_SQL} AND o.kind = 'subscription'
                AND o.created_at >= :since AND o.paid_at < :paid_cutoff
                AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.order_id = o.id)
              ORDER BY o.id LIMIT :limit""",
          "order {reference} (user {user_id}, {gateway} {gateway_order_id}, {amount_minor} "
          "{currency}) is paid but has no subscription",
          params=lambda c: {"paid_cutoff": _ago(minutes=c["MONITOR_PAID_GRACE_MINUTES"])}),
    Check("subscription_without_gateway_id", CRITICAL,
          "Live gateway-billed subscriptions not linked to the gateway's subscription",
          f"""SELECT s.id, s.user_id, s.gateway, s.status, o.reference, count(*) OVER () AS total
              FROM subscriptions s LEFT JOIN orders o ON o.id = s.order_id
              WHERE s.status IN {LIVE_SQL} AND s.gateway IN {GATEWAY_BILLED_SQL}
                AND s.gateway_subscription_id IS NULL AND s.created_at >= :since
              ORDER BY s.id LIMIT :limit""",
          "subscription {id} (user {user_id}, {status}, order {reference}) has no {gateway} "
          "subscription id: {gateway} keeps charging, but its renewals, cancellations and plan "
          "changes cannot find it; run `flask fix subscriptions --fix`"),
    Check("order_needs_review", CRITICAL, "Orders where money may be taken but fulfilment was refused",
          """SELECT o.id, o.reference, o.user_id, o.gateway, o.failure_code, o.amount_minor,
                    o.currency, count(*) OVER () AS total
             FROM orders o
             WHERE o.status = 'needs_review' AND o.created_at >= :since
               AND COALESCE(o.failure_code, '') <> 'PAYMENT_UNMATCHED'
             ORDER BY o.id LIMIT :limit""",
          "order {reference} (user {user_id}, {gateway}, {amount_minor} {currency}) needs review: "
          "{failure_code}", fingerprint=("failure_code",)),
    Check("payment_unmatched", CRITICAL,
          "Payments that match no order or subscription (possible duplicate charge)",
          """SELECT o.id, o.reference, o.user_id, o.gateway, o.gateway_order_id,
                    o.gateway_payment_id, o.amount_minor, o.currency, o.created_at,
                    count(*) OVER () AS total
             FROM orders o
             WHERE o.status = 'needs_review' AND o.failure_code = 'PAYMENT_UNMATCHED'
               AND o.created_at >= :since
             ORDER BY o.id LIMIT :limit""",
          "possible duplicate charge: {reference} holds {gateway} payment {gateway_payment_id} "
          "({amount_minor} {currency}, user {user_id}) that matches no order or subscription; "
          "nothing was granted",
          action="Look the payment up at the gateway and with the shopper, then refund it "
                 "(flask orders refund REF) or grant what it paid for (flask orders grant REF)."),
    Check("orphan_subscription", WARNING, "Subscriptions whose order is not paid",
          f"""SELECT s.id, s.user_id, s.status AS subscription_status, o.reference,
                     o.status AS order_status, count(*) OVER () AS total
              FROM orders o JOIN subscriptions s ON s.order_id = o.id
              WHERE o.created_at >= :since
                AND (o.status IN {UNPAID_SQL}
                     OR (o.status IN ('refunded', 'disputed') AND s.status IN {LIVE_SQL}))
              ORDER BY s.id LIMIT :limit""",
          "subscription {id} (user {user_id}, {subscription_status}) hangs on order {reference} "
          "which is {order_status}", fingerprint=("subscription_status", "order_status")),
    Check("multiple_live_subscriptions", WARNING, "Users with more than one live subscription",
          f"""SELECT s.user_id AS id, count(*) AS live_count, min(s.id) AS first_id,
                     max(s.id) AS last_id, count(*) OVER () AS total
              FROM subscriptions s WHERE s.status IN {LIVE_SQL}
              GROUP BY s.user_id HAVING count(*) > 1
              ORDER BY s.user_id LIMIT :limit""",
          "user {id} has {live_count} live subscriptions ({first_id}..{last_id})",
          fingerprint=("live_count",)),
    Check("user_status_drift", WARNING, "Users whose status or credits disagree with their records",
          f"""SELECT u.id, u.email, u.subscription_status,
                     COALESCE(ss.status, 'none') AS expected_status,
                     u.plan_meal_credits, COALESCE(lp.balance_after, 0) AS expected_plan_credits,
                     u.addon_meal_credits, COALESCE(la.balance_after, 0) AS expected_addon_credits,
                     count(*) OVER () AS total
              FROM users u
              LEFT JOIN (SELECT user_id, COALESCE(max(id) FILTER (WHERE status IN {LIVE_SQL}),
                                                  max(id)) AS sub_id
                         FROM subscriptions GROUP BY user_id) sl ON sl.user_id = u.id
              LEFT JOIN subscriptions ss ON ss.id = sl.sub_id
              LEFT JOIN (SELECT user_id, max(id) FILTER (WHERE bucket = 'plan') AS plan_id,
                                max(id) FILTER (WHERE bucket = 'addon') AS addon_id
                         FROM credit_ledger GROUP BY user_id) ll ON ll.user_id = u.id
              LEFT JOIN credit_ledger lp ON lp.id = ll.plan_id
              LEFT JOIN credit_ledger la ON la.id = ll.addon_id
              WHERE u.subscription_status <> COALESCE(ss.status, 'none')
                 OR u.plan_meal_credits <> COALESCE(lp.balance_after, 0)
                 OR u.addon_meal_credits <> COALESCE(la.balance_after, 0)
              ORDER BY u.id LIMIT :limit""",
          "user {id} ({email}): status {subscription_status} (expected {expected_status}), plan "
          "credits {plan_meal_credits} (ledger {expected_plan_credits}), add-on credits "
          "{addon_meal_credits} (ledger {expected_addon_credits})",
          fingerprint=("subscription_status", "expected_status", "plan_meal_credits",
                       "expected_plan_credits", "addon_meal_credits", "expected_addon_credits")),
    Check("payment_user_mismatch", CRITICAL, "Orders whose gateway metadata names another user",
          f"""SELECT o.id, o.reference, o.user_id, o.gateway_metadata_user_id, o.status,
                     CASE WHEN o.status IN {PAID_SQL} THEN 'critical' ELSE 'warning' END AS severity,
                     count(*) OVER () AS total
              FROM orders o
              WHERE o.gateway_metadata_user_id IS NOT NULL
                AND o.gateway_metadata_user_id <> o.user_id AND o.created_at >= :since
              ORDER BY o.id LIMIT :limit""",
          "order {reference} ({status}) is recorded for user {user_id} but the gateway's metadata "
          "names user {gateway_metadata_user_id}", fingerprint=("user_id", "status")),
    Check("webhook_events", WARNING, "Webhook events failed, dead-lettered or stuck",
          """SELECT w.id, w.gateway, w.event_id, w.event_type, w.status, w.attempts,
                    w.received_at, CASE WHEN w.status = 'dead' THEN 'critical' ELSE 'warning' END
                    AS severity, count(*) OVER () AS total
             FROM webhook_events w
             WHERE (w.status IN ('failed', 'dead')
                    OR (w.status = 'received' AND w.received_at < :stuck_cutoff))
               AND w.received_at >= :since
             ORDER BY w.id LIMIT :limit""",
          "{gateway} event {event_id} ({event_type}) is {status} after {attempts} attempt(s)",
          fingerprint=("status",),
          params=lambda c: {"stuck_cutoff": _ago(minutes=c["MONITOR_WEBHOOK_STUCK_MINUTES"])}),
    Check("gateway_webhooks_quiet", CRITICAL, "Gateways silent while orders keep coming",
          "",  # built per run from the configured gateways, see _quiet_sql
          "{id} has sent no webhook for longer than the quiet period (last one: "
          "{last_webhook_at}) while {orders_since} order(s) were placed; check the endpoint in "
          "the {id} dashboard",
          params=lambda c: {"quiet_cutoff": _ago(hours=c["MONITOR_WEBHOOK_QUIET_HOURS"]),
                            "settle_cutoff": _ago(minutes=c["MONITOR_PAID_GRACE_MINUTES"])}),
    Check("authorized_not_captured", CRITICAL, "Payments authorised but not captured (auto-refund near)",
          f"""SELECT o.id, o.reference, o.user_id, o.gateway, o.authorized_at, o.amount_minor,
                     o.currency, count(*) OVER () AS total
              FROM orders o
              WHERE o.status IN {UNPAID_SQL} AND o.authorized_at IS NOT NULL
                AND o.authorized_at < :authorized_cutoff
              ORDER BY o.id LIMIT :limit""",
          "order {reference} ({gateway}, {amount_minor} {currency}) authorised at {authorized_at} "
          "and still not captured; the gateway will refund it automatically",
          params=lambda c: {"authorized_cutoff": _ago(hours=c["MONITOR_AUTHORIZED_ALERT_HOURS"])}),
    Check("notification_outbox", WARNING, "Notifications stuck in the outbox",
          """SELECT n.id, n.kind, n.to_email, n.status, n.attempts, n.created_at,
                    count(*) OVER () AS total
             FROM notification_outbox n
             WHERE (n.status = 'failed'
                    OR (n.status = 'pending' AND n.created_at < :outbox_cutoff))
               AND n.created_at >= :since
             ORDER BY n.id LIMIT :limit""",
          "{kind} email {id} to {to_email} is {status} after {attempts} attempt(s)",
          fingerprint=("status",),
          params=lambda c: {"outbox_cutoff": _ago(minutes=c["MONITOR_OUTBOX_STUCK_MINUTES"])}),
    Check("order_pending_too_long", WARNING, "Orders pending for longer than a day",
          """SELECT o.id, o.reference, o.user_id, o.gateway, o.created_at, count(*) OVER () AS total
             FROM orders o
             WHERE o.status = 'pending' AND o.created_at < :pending_cutoff
               AND o.created_at >= :since AND o.authorized_at IS NULL
             ORDER BY o.id LIMIT :limit""",
          "order {reference} (user {user_id}, {gateway}) has been pending since {created_at}",
          params=lambda c: {"pending_cutoff": _ago(hours=c["MONITOR_PENDING_ORDER_HOURS"])}),
]
CHECK_NAMES = [c.name for c in CHECKS]


def get_check(name: str) -> Check:
    return next(c for c in CHECKS if c.name == name)


def _quiet_sql(gateways: list[str]) -> tuple[str, dict]:
    """One query over the configured gateways: last webhook, and orders placed since."""
    if not gateways:
        return "", {}
    parts, params = [], {}
    for i, name in enumerate(gateways):
        params[f"g{i}"] = name
        parts.append(f"SELECT :g{i} AS gateway, (SELECT max(w.received_at) FROM webhook_events w "
                     f"WHERE w.gateway = :g{i}) AS last_at")
    sql = f"""SELECT q.gateway AS id, q.last_at AS last_webhook_at, q.orders_since,
                     count(*) OVER () AS total
              FROM (SELECT g.gateway, g.last_at,
                           (SELECT count(*) FROM orders o WHERE o.gateway = g.gateway
                              AND o.created_at > COALESCE(g.last_at, :epoch)
                              AND o.created_at < :settle_cutoff) AS orders_since
                    FROM ({' UNION ALL '.join(parts)}) g
                    WHERE g.last_at IS NULL OR g.last_at < :quiet_cutoff) q
              WHERE q.orders_since > 0
              ORDER BY q.gateway LIMIT :limit"""
    return sql, params


def _bind(sql: str, params: dict) -> sa.TextClause:
    """Bind datetimes with the column type, so SQLite and PostgreSQL compare alike."""
    clause = sa.text(sql)
    typed = [sa.bindparam(k, type_=UTCDateTime()) for k, v in params.items()
             if isinstance(v, datetime) and f":{k}" in sql]
    return clause.bindparams(*typed) if typed else clause


def _readable(data: dict) -> dict:
    """Values as a person reads them in a finding: a missing time is "never"."""
    return {k: ("never" if v is None and k.endswith("_at") else v) for k, v in data.items()}


def check_query(check: Check, *, since: datetime | None = None, limit: int | None = None,
                overrides: dict | None = None) -> tuple[sa.TextClause, dict]:
    """The SQL and parameters of one check (also used by the benchmark for raw timings);
    `overrides` replaces parameters the settings would give (a repair's own cut-offs)."""
    cfg = current_app.config
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    params = {"since": since or epoch, "epoch": epoch,
              "limit": limit or cfg["MONITOR_MAX_FINDINGS_PER_CHECK"]}
    if check.params:
        params.update(check.params(cfg))
    params.update(overrides or {})
    sql = check.sql
    if check.name == "gateway_webhooks_quiet":
        sql, extra = _quiet_sql(available_gateways())
        params.update(extra)
    return (_bind(sql, params) if sql else None), params


def _fingerprint(check: Check, row: dict) -> str:
    facts = {k: row.get(k) for k in check.fingerprint}
    facts["severity"] = row.get("severity")
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _jsonable(value):
    return value.isoformat() if isinstance(value, datetime) else value


def run_check(check: Check, *, since: datetime | None = None, limit: int | None = None,
              overrides: dict | None = None) -> tuple[list[Finding], int]:
    """Run one check; returns its findings (capped) and the total number of problem rows."""
    query, params = check_query(check, since=since, limit=limit, overrides=overrides)
    if query is None:
        return [], 0
    rows = db.session.execute(query, params).mappings().all()
    findings, total = [], 0
    for row in rows:
        data = {k: _jsonable(v) for k, v in row.items() if k != "total"}
        total = row["total"]
        data.setdefault("severity", check.severity)
        findings.append(Finding(check.name, data["severity"], f"{check.name}:{data['id']}",
                                check.summary.format(**_readable(data)), data,
                                _fingerprint(check, data)))
    if total > len(findings):
        findings.append(Finding(check.name, check.severity, f"{check.name}:more",
                                f"{total - len(findings)} more {check.name} finding(s) not listed",
                                {"total": total}, str(total)))
    return findings, total


def run_checks(*, since: datetime | None = None, names: Iterable[str] | None = None,
               progress: Callable | None = None) -> Report:
    """Run every check (read-only) and return the report."""
    started, clock = utcnow(), time.perf_counter()
    selected = [c for c in CHECKS if names is None or c.name in set(names)]
    findings, counts, timings = [], {}, {}
    for check in (progress(selected) if progress else selected):
        t0 = time.perf_counter()
        found, total = run_check(check, since=since)
        timings[check.name] = round((time.perf_counter() - t0) * 1000, 1)
        counts[check.name] = total
        findings.extend(found)
    db.session.rollback()  # end the read transaction
    return Report(findings, counts, timings, started,
                  duration_ms=int((time.perf_counter() - clock) * 1000))


RECORDED_FINDINGS = 500  # findings kept with a run for the console (critical first)


def run_summary(report: Report) -> dict:
    """What a run keeps: counts, alert outcome, and its findings (critical first) for the console."""
    ordered = sorted(report.findings, key=lambda f: f.severity != CRITICAL)
    return {"counts": report.counts, "alerts_sent": report.alerts_sent,
            "alert_errors": report.alert_errors, "duration_ms": report.duration_ms,
            "critical": sum(f.severity == CRITICAL for f in report.findings),
            "warning": sum(f.severity == WARNING for f in report.findings),
            "findings": [asdict(f) for f in ordered[:RECORDED_FINDINGS]]}


def record_run(report: Report, *, run_id: int | None = None) -> None:
    """Store the run (for the health summary and the console); `run_id` finishes a run
    the console started."""
    run = db.session.get(MonitorRun, run_id) if run_id else None
    if run is None:
        run = MonitorRun(started_at=report.started_at)
        db.session.add(run)
    run.finished_at, run.exit_code, run.summary = utcnow(), report.exit_code, run_summary(report)
    db.session.commit()
    report.run_id = run.id


# --- alerts -----------------------------------------------------------------

def _existing_alerts(keys: list[str]) -> dict[str, MonitorAlert]:
    found = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        for alert in db.session.scalars(sa.select(MonitorAlert).where(
                MonitorAlert.alert_key.in_(chunk))):
            found[alert.alert_key] = alert
    return found


def _due(finding: Finding, alert: MonitorAlert | None, now: datetime, reminder: timedelta) -> bool:
    if alert is None or alert.resolved_at is not None or alert.fingerprint != finding.fingerprint:
        return True
    return alert.last_sent_at is None or alert.last_sent_at < now - reminder


def format_alert(findings: list[Finding], report: Report) -> tuple[str, str]:
    """Subject and plain-text body for a batch of findings."""
    critical = sum(f.severity == CRITICAL for f in report.findings)
    warning = sum(f.severity == WARNING for f in report.findings)
    level = "CRITICAL" if critical else "WARNING"
    subject = f"[Tiffin monitor] {level}: {critical} critical, {warning} warning"
    lines = [f"{len(findings)} new or changed finding(s) of {len(report.findings)} open:"]
    for f in findings[:MAX_LINES_PER_MESSAGE]:
        lines.append(f"- [{f.severity}] {f.check}: {f.summary}")
    if len(findings) > MAX_LINES_PER_MESSAGE:
        lines.append(f"... and {len(findings) - MAX_LINES_PER_MESSAGE} more (run the monitor with --json)")
    lines.extend(f"What to do about {name}: {action}" for name, action in report.actions.items())
    return subject, "\n".join(lines)


def send_email(subject: str, body: str) -> None:
    cfg = current_app.config
    recipients = [a.strip() for a in cfg["ALERT_EMAIL"].split(",") if a.strip()]
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = (subject, cfg["MAIL_DEFAULT_SENDER"],
                                                          ", ".join(recipients))
    message.set_content(body)
    with smtplib.SMTP(cfg["MAIL_SERVER"], cfg["MAIL_PORT"],
                      timeout=cfg["MAIL_TIMEOUT_SECONDS"]) as smtp:
        if cfg["MAIL_USE_TLS"]:
            smtp.starttls()
        if cfg["MAIL_USERNAME"]:
            smtp.login(cfg["MAIL_USERNAME"], cfg["MAIL_PASSWORD"])
        smtp.send_message(message)


def send_webhook(subject: str, body: str) -> None:
    """Post to a Slack-compatible incoming webhook: {"text": ...}."""
    cfg = current_app.config
    response = requests.post(cfg["ALERT_WEBHOOK_URL"], json={"text": f"*{subject}*\n{body}"},
                             timeout=cfg["MAIL_TIMEOUT_SECONDS"])
    if response.status_code >= 300:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")


def deliver(subject: str, body: str) -> list[str]:
    """Send to every configured destination; returns one error string per failure."""
    cfg, errors, destinations = current_app.config, [], []
    if cfg.get("ALERT_EMAIL"):
        destinations.append(("email", send_email))
    if cfg.get("ALERT_WEBHOOK_URL"):
        destinations.append(("webhook", send_webhook))
    if not destinations:
        return ["no alert destination configured (set ALERT_EMAIL and/or ALERT_WEBHOOK_URL)"]
    for name, send in destinations:
        try:
            send(subject, body)
        except Exception as exc:  # every failure is reported, never dropped
            log.error("alert via %s failed: %s", name, exc)
            errors.append(f"alert via {name} failed: {exc}")
    return errors


def process_alerts(report: Report, *, actor: str = "cli:monitor") -> None:
    """Send the findings that are new, changed, reopened or due a reminder; remember them.

    An alert that could not be delivered is not marked sent (the next run tries
    again) and is reported in `report.alert_errors`.
    """
    now = utcnow()
    reminder = timedelta(hours=current_app.config["ALERT_REMINDER_HOURS"])
    existing = _existing_alerts([f.key for f in report.findings])
    due = [f for f in report.findings if _due(f, existing.get(f.key), now, reminder)]
    if due:
        subject, body = format_alert(due, report)
        report.alert_errors = deliver(subject, body)
    sent = bool(due) and not report.alert_errors
    due_keys = {f.key for f in due}
    for finding in report.findings:
        alert = existing.get(finding.key)
        if alert is None:
            alert = MonitorAlert(alert_key=finding.key, first_seen_at=now)
            db.session.add(alert)
        alert.fingerprint, alert.severity = finding.fingerprint, finding.severity
        alert.summary, alert.last_seen_at, alert.resolved_at = finding.summary, now, None
        if sent and finding.key in due_keys:
            alert.last_sent_at = now
    db.session.flush()
    # Whatever was open and is no longer found is resolved (one UPDATE).
    resolved = db.session.execute(
        sa.update(MonitorAlert).where(MonitorAlert.resolved_at.is_(None),
                                      MonitorAlert.last_seen_at < now)
        .values(resolved_at=now).execution_options(synchronize_session=False)).rowcount
    report.alerts_sent = len(due) if sent else 0
    if due or resolved:
        audit.record(actor, "monitor_alert_sent" if sent else "monitor_alert_failed",
                     "monitor_alert", None, findings=len(due), resolved=resolved,
                     errors=report.alert_errors or None, keys=sorted(due_keys)[:50])
    db.session.commit()
