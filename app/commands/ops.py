"""Operator commands for cron: monitor, fix, reconcile (the utils/ scripts wrap these).

Every command has --json for machines and a table for people, reports long
runs with a progress bar on stderr, and ends with a documented exit code.
Commands that change data hold a job lock, so overlapping cron runs never both act.
"""
from __future__ import annotations

import json
import re
import sys
from datetime import timedelta

import click
from flask.cli import with_appcontext

from app.models.types import utcnow
from app.services import health, monitoring, reconcile as reconcile_service, repair
from app.services.job_lock import JobLocked, job_lock

EXIT_LOCKED = 4
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Duration(click.ParamType):
    """A duration such as 90s, 30m, 24h, 7d or 2w."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(value).lower())
        if not match:
            self.fail(f"{value!r} is not a duration like 30m, 24h or 7d", param, ctx)
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


DURATION = Duration()


def _progress(label: str):
    def wrap(items):
        items = list(items)
        with click.progressbar(items, label=label, file=sys.stderr) as bar:
            yield from bar
    return wrap


def _emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(rows: list[dict], columns: list[str]) -> None:
    """A plain fixed-width table (long cells are cut so a row fits a terminal)."""
    if not rows:
        return
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [min(max(len(c), *(len(row[i]) for row in cells)), 90) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)))
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(cell[:w].ljust(w) for cell, w in zip(row, widths)))


def _locked(exc: JobLocked):
    click.echo(f"skipped: {exc}", err=True)
    click.get_current_context().exit(EXIT_LOCKED)


# --- monitor ------------------------------------------------------------------

@click.group("monitor")
def monitor_group():
    """Payment/subscription monitor and health summary."""


@monitor_group.command("check")
@click.option("--check", "_check", is_flag=True, help="Run the checks (the default).")
@click.option("--alert", is_flag=True,
              help="Send new/changed findings to ALERT_EMAIL and ALERT_WEBHOOK_URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--since", type=DURATION, default=None,
              help="Only look at orders/events/emails created in this window (e.g. 24h).")
@with_appcontext
def monitor_check_command(_check, alert, as_json, since):
    """Find payment and subscription problems.

    \b
    Exit codes: 0 healthy, 1 warnings only, 2 a critical finding (money taken,
    nothing given; always wins), 3 an alert could not be sent, 4 another --alert run is
    in progress.
    """
    since_at = utcnow() - since if since else None
    progress = None if as_json else _progress("Running checks")
    try:
        if alert:
            with job_lock("monitor", ttl_seconds=600):
                report = monitoring.run_checks(since=since_at, progress=progress)
                monitoring.process_alerts(report)
        else:
            report = monitoring.run_checks(since=since_at, progress=progress)
    except JobLocked as exc:
        return _locked(exc)
    monitoring.record_run(report)
    if as_json:
        _emit_json(report.as_dict())
    else:
        _table([{"severity": f.severity, "check": f.check, "finding": f.summary}
                for f in report.findings], ["severity", "check", "finding"])
        for name, action in report.actions.items():
            click.echo(f"What to do about {name}: {action}")
        totals = ", ".join(f"{k}={v}" for k, v in report.counts.items() if v)
        click.echo(f"{len(report.findings)} finding(s) in {report.duration_ms} ms"
                   + (f" ({totals})" if totals else ": healthy")
                   + (f"; {report.alerts_sent} alerted" if alert else ""))
    for error in report.alert_errors:
        click.echo(f"ALERT NOT SENT: {error}", err=True)
    click.get_current_context().exit(report.exit_code)


@monitor_group.command("health")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_appcontext
def monitor_health_command(as_json):
    """One-screen health summary: counts by status, last webhook per gateway, last monitor run."""
    data = health.summary()
    if as_json:
        return _emit_json(data)
    click.echo("Gateways: " + (", ".join(
        f"{g['name']} (last webhook {g['last_webhook_at'] or 'never'})" for g in data["gateways"])
        or "none configured"))
    for section in ("orders", "subscriptions", "webhook_events", "notifications"):
        counts = data[section]
        click.echo(f"{section.replace('_', ' ').capitalize()}: "
                   + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    click.echo(f"Users: {data['users']}")
    run = data["last_monitor_run"]
    click.echo("Last monitor run: " + ("never" if run is None else
                                       f"{run['started_at']} exit {run['exit_code']}"))


# --- fix --------------------------------------------------------------------

@click.group("fix")
def fix_group():
    """Repairs: missing subscriptions, status drift, payments recorded for the wrong user."""


def _results_out(results: list, as_json: bool, extra: dict | None = None) -> None:
    if as_json:
        return _emit_json({**(extra or {}), "results": [r.as_dict() for r in results]})
    _table([{"kind": r.kind, "target": r.target, "action": r.action,
             "changed": "yes" if r.changed else "no", "error": r.error or "",
             "diff": json.dumps(r.diff, default=str) if r.diff else ""} for r in results],
           ["kind", "target", "action", "changed", "error", "diff"])
    changed = sum(r.changed for r in results)
    failed = sum(bool(r.error) for r in results)
    click.echo(f"{len(results)} item(s), {changed} changed, {failed} failed")


@fix_group.command("subscriptions")
@click.option("--check", "mode", flag_value="check", help="List what needs fixing (no changes).")
@click.option("--fix", "mode", flag_value="fix", help="Create missing subscriptions, repair drift.")
@click.option("--dry-run", is_flag=True, help="With --fix: show what would change, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_appcontext
def fix_subscriptions_command(mode, dry_run, as_json):
    """Create the missing subscription for every paid order; repair status drift.

    \b
    A Stripe or Razorpay subscription is linked to the gateway's own (the id the
    order recorded, else the gateway is asked once), so its webhooks find it.

    \b
    Exit codes: 0 nothing to fix (or all fixed), 1 only status drift found,
    2 a paid order without subscription or a gateway-billed subscription without
    the gateway's id found (or a repair failed), 4 already running.
    """
    ctx = click.get_current_context()
    if mode is None:
        raise click.UsageError("give --check or --fix")
    if mode == "check":
        missing, drift = repair.missing_subscription_findings(), repair.drift_findings()
        unlinked = repair.unlinked_subscription_findings()
        findings = missing + unlinked + drift
        if as_json:
            _emit_json({"findings": [f.__dict__ for f in findings]})
        else:
            _table([{"check": f.check, "finding": f.summary} for f in findings], ["check", "finding"])
            click.echo(f"{len(missing)} paid order(s) without subscription, "
                       f"{len(unlinked)} subscription(s) without the gateway's id, "
                       f"{len(drift)} user(s) with status drift")
        ctx.exit(2 if missing or unlinked else 1 if drift else 0)
    try:
        with job_lock("fix"):
            results = repair.fix_failed_subscriptions(
                dry_run=dry_run, progress=None if as_json else _progress("Repairing"))
    except JobLocked as exc:
        return _locked(exc)
    _results_out(results, as_json, {"dry_run": dry_run})
    if any(r.error for r in results):
        ctx.exit(2)
    if dry_run and results:
        ctx.exit(2 if any(r.kind in ("missing_subscription", "unlinked_subscription")
                          for r in results) else 1)
    ctx.exit(0)


@fix_group.command("sync-status")
@click.option("--fix", "_fix", is_flag=True,
              help="Apply the repair (the default; accepted like `fix subscriptions --fix`).")
@click.option("--dry-run", is_flag=True, help="Show the diff, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_appcontext
def sync_status_command(_fix, dry_run, as_json):
    """Recompute each user's status from the subscriptions and credits from the ledger.

    \b
    Exit codes: 0 in step (or brought in step), 1 with --dry-run: differences found,
    2 a repair failed, 4 already running.
    """
    ctx = click.get_current_context()
    try:
        with job_lock("sync-status"):
            results = repair.sync_subscription_status(
                dry_run=dry_run, progress=None if as_json else _progress("Syncing"))
    except JobLocked as exc:
        return _locked(exc)
    _results_out(results, as_json, {"dry_run": dry_run})
    ctx.exit(2 if any(r.error for r in results) else 1 if dry_run and results else 0)


@fix_group.command("payment-user-mismatch")
@click.option("--order", "reference", required=True, help="The order reference (TF-...).")
@click.option("--user", "email", required=True, help="Email of the user who really paid.")
@click.option("--dry-run", is_flag=True, help="Show what would move, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_appcontext
def payment_user_mismatch_command(reference, email, dry_run, as_json):
    """Move a paid order (subscription, renewals, credits) to the user who paid, with an audit trail.

    \b
    Exit codes: 0 moved (or nothing to do), 2 refused (reason on stderr), 4 already running.
    """
    ctx = click.get_current_context()
    try:
        with job_lock("fix-payment-user-mismatch"):
            result = repair.fix_payment_user_mismatch(reference, email, dry_run=dry_run)
    except JobLocked as exc:
        return _locked(exc)
    except repair.RepairError as exc:
        click.echo(f"refused: {exc}", err=True)
        ctx.exit(2)
    _results_out([result], as_json, {"dry_run": dry_run})
    ctx.exit(0)


# --- reconcile -----------------------------------------------------------------

@click.command("reconcile")
@click.option("--since", type=DURATION, default="24h", show_default=True,
              help="How far back to ask the gateways (e.g. 2h, 24h, 7d).")
@click.option("--fix", is_flag=True, help="Fulfil what was paid at the gateway but not recorded here.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_appcontext
def reconcile_command(since, fix, as_json):
    """Compare each configured gateway's recent payments with our orders (missed-webhook backstop).

    \b
    Exit codes: 0 in agreement (or all fixed), 1 refunded/unpaid-there reports only,
    2 paid there but not recorded here (unfixed) or a gateway could not be asked,
    4 another --fix run is in progress.
    """
    ctx = click.get_current_context()
    progress = None if as_json else _progress("Reconciling")
    since_at = utcnow() - since
    try:
        if fix:
            with job_lock("reconcile"):
                report = reconcile_service.reconcile(since_at, fix=True, progress=progress)
        else:
            report = reconcile_service.reconcile(since_at, progress=progress)
    except JobLocked as exc:
        return _locked(exc)
    if as_json:
        _emit_json(report.as_dict())
    else:
        _table([{"kind": d.kind, "gateway": d.gateway, "gateway_order_id": d.gateway_order_id,
                 "reference": d.reference or "", "here": d.local_status or "-",
                 "fixed": "yes" if d.fixed else "no", "note": d.error or d.detail}
                for d in report.discrepancies],
               ["kind", "gateway", "gateway_order_id", "reference", "here", "fixed", "note"])
        checked = ", ".join(f"{k}: {v}" for k, v in report.checked.items()) or "no gateway listed"
        click.echo(f"Checked {checked}; {len(report.discrepancies)} discrepanc(y/ies)")
    for error in report.errors:
        click.echo(f"ERROR: {error}", err=True)
    ctx.exit(report.exit_code)


COMMANDS = [monitor_group, fix_group, reconcile_command]
