"""The notification outbox: emails are written in the same transaction as the
change they announce and sent later by `flask notifications send`.

Sending claims rows the way the webhook retry does (`FOR UPDATE SKIP LOCKED` on
PostgreSQL plus a compare-and-set on `next_attempt_at` as a lease), so the
command can run from cron on several hosts at once. A row that cannot be sent
is retried with exponential backoff and marked failed after
NOTIFICATION_MAX_ATTEMPTS. An unreachable SMTP server stops the run at the
first refusal and is logged once, not once per row.
"""
from __future__ import annotations

import logging
import smtplib
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import urlparse

import sqlalchemy as sa
from flask import current_app, render_template

from app.extensions import db
from app.models import NotificationOutbox
from app.models.ops import OUTBOX_FAILED, OUTBOX_PENDING, OUTBOX_SENT
from app.models.types import utcnow
from app.services import live_updates
from app.services.sql import insert_unless_exists
from app.services.work_claims import claim_due

log = logging.getLogger("tiffin.notifications")
KINDS = {
    "payment_confirmed", "renewal", "payment_failed", "action_required", "refund", "dispute",
    "cancellation", "payment_declined", "plan_changed",
}
BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 6 * 3600
CLAIM_LEASE = timedelta(minutes=10)
# Refusals of one message; anything else (every SMTPException is an OSError) means
# the mail server is not there or not usable, so the run stops.
MESSAGE_REFUSED = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused,
                   smtplib.SMTPDataError, smtplib.SMTPNotSupportedError)
SERVER_DOWN = (OSError, socket.timeout)


def enqueue(user, kind: str, dedupe_key: str, **context) -> bool:
    """Add an email to the outbox (in the caller's transaction) unless one with
    this dedupe key already exists; True if added.

    Also asks for a live update of the user's account page, published only after
    the caller's transaction commits (see app.services.live_updates).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind}")
    context.setdefault("user", user)
    context.setdefault("support_email", current_app.config["SUPPORT_EMAIL"])
    context.setdefault("base_url", current_app.config["APP_BASE_URL"])
    subject = render_template(f"emails/{kind}.subject.txt", **context).strip()
    body = render_template(f"emails/{kind}.txt", **context)
    table = NotificationOutbox.__table__
    added = insert_unless_exists(table, "dedupe_key").execute(dict(
        user_id=user.id, kind=kind, to_email=user.email, subject=subject, body_text=body,
        dedupe_key=dedupe_key, status=OUTBOX_PENDING, attempts=0, next_attempt_at=None,
        last_error=None, sent_at=None, created_at=utcnow())).scalar() is not None
    if added:
        live_updates.after_commit(user.id, kind)
    return added


def backoff_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0),
                                 BACKOFF_CAP_SECONDS))


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    server_error: str | None = None
    ids: list[int] = field(default_factory=list)


def claim_pending(limit: int = 100) -> list[int]:
    """Claim up to `limit` pending rows that are due; return their ids."""
    return claim_due(NotificationOutbox, NotificationOutbox.status == OUTBOX_PENDING,
                     lease=CLAIM_LEASE, limit=limit, order_by=[NotificationOutbox.id])


def _connect() -> smtplib.SMTP:
    cfg = current_app.config
    smtp = smtplib.SMTP(cfg["MAIL_SERVER"], cfg["MAIL_PORT"], timeout=cfg["MAIL_TIMEOUT_SECONDS"])
    try:
        if cfg["MAIL_USE_TLS"]:
            smtp.starttls()
        if cfg["MAIL_USERNAME"]:
            smtp.login(cfg["MAIL_USERNAME"], cfg["MAIL_PASSWORD"])
    except Exception:
        smtp.close()
        raise
    return smtp


def _message(row: NotificationOutbox) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    msg["To"] = row.to_email
    msg["Subject"] = row.subject
    # The same id on every attempt, so a receiving system can drop an at-least-once resend.
    host = urlparse(current_app.config["APP_BASE_URL"]).hostname or "tiffin.invalid"
    msg["Message-ID"] = f"<outbox-{row.id}@{host}>"
    msg["X-Tiffin-Dedupe-Key"] = row.dedupe_key
    msg.set_content(row.body_text)
    return msg


def _record_failure(row: NotificationOutbox, error: str) -> str:
    row.attempts += 1
    row.last_error = error[:4000]
    if row.attempts >= current_app.config["NOTIFICATION_MAX_ATTEMPTS"]:
        row.status = OUTBOX_FAILED
        row.next_attempt_at = None
        log.error("giving up on email %s (%s to user %s) after %s attempts", row.id, row.kind,
                  row.user_id, row.attempts)
        return OUTBOX_FAILED
    row.next_attempt_at = utcnow() + backoff_delay(row.attempts)
    return OUTBOX_PENDING


def send_pending(limit: int = 100) -> SendReport:
    """Send due outbox emails over SMTP (MAIL_* settings); return what happened."""
    report = SendReport()
    claimed = claim_pending(limit)
    if not claimed:
        return report
    try:
        smtp = _connect()
    except SERVER_DOWN as exc:
        report.server_error = f"{type(exc).__name__}: {exc}"
        _server_down(claimed, report)
        return report
    claimed_at = utcnow()
    try:
        for position, row_id in enumerate(claimed):
            if utcnow() - claimed_at > CLAIM_LEASE / 2:
                break  # our claim on the rest is running out; another run will take them
            row = db.session.get(NotificationOutbox, row_id)
            try:
                smtp.send_message(_message(row))
            except MESSAGE_REFUSED as exc:
                if _record_failure(row, f"{type(exc).__name__}: {exc}") == OUTBOX_FAILED:
                    report.failed += 1
                else:
                    report.retrying += 1
                log.warning("email %s (%s) refused by the mail server: %s", row.id, row.kind,
                            type(exc).__name__)
            except SERVER_DOWN as exc:
                db.session.rollback()
                report.server_error = f"{type(exc).__name__}: {exc}"
                _server_down(claimed[position:], report)
                return report
            else:
                row.status = OUTBOX_SENT
                row.sent_at = utcnow()
                row.next_attempt_at = None
                row.attempts += 1
                report.sent += 1
                report.ids.append(row.id)
            db.session.commit()
    finally:
        try:
            smtp.quit()
        except Exception:  # the server may already be gone; the mails are recorded
            smtp.close()
    return report


def _server_down(row_ids: list[int], report: SendReport) -> None:
    """The mail server is unreachable: log once, put every claimed row back with backoff."""
    log.warning("mail server %s:%s unreachable (%s); %s email(s) stay in the outbox",
                current_app.config["MAIL_SERVER"], current_app.config["MAIL_PORT"],
                report.server_error, len(row_ids))
    for row_id in row_ids:
        row = db.session.get(NotificationOutbox, row_id)
        outcome = _record_failure(row, report.server_error)
        if outcome == OUTBOX_FAILED:
            report.failed += 1
        else:
            report.retrying += 1
    db.session.commit()


def outbox_counts() -> dict[str, int]:
    """Rows per status, for the monitor and the CLI."""
    rows = db.session.execute(sa.select(NotificationOutbox.status, sa.func.count())
                              .group_by(NotificationOutbox.status)).all()
    return {status: n for status, n in rows}
