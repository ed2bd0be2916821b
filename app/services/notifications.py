"""The notification outbox: emails are written in the same transaction as the
change they announce, tried once right after that transaction commits (on a
background thread, so no response waits for SMTP), and otherwise sent by
`flask notifications send` from cron, the backstop.

Sending claims rows the way the webhook retry does (`FOR UPDATE SKIP LOCKED` on
PostgreSQL plus a compare-and-set on `next_attempt_at` as a lease), so the
command can run from cron on several hosts at once. A row that cannot be sent
is retried with exponential backoff and marked failed after
NOTIFICATION_MAX_ATTEMPTS. An unreachable SMTP server stops the run at the
first refusal and is logged once, not once per row. The prompt try claims its
rows the same way, so it and the cron command never both send one; when it
cannot send, the row goes back untouched for the cron command.

In development without a MAIL_SERVER (DEV_MAILBOX) mail is delivered to the
/dev/mailbox page instead of SMTP: the sent outbox row is the message.
"""
from __future__ import annotations

import logging
import os
import smtplib
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import urlparse

import sqlalchemy as sa
from flask import current_app, has_app_context, render_template
from flask_sqlalchemy.session import Session

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
_SEND_SOON_KEY = "tiffin_send_after_commit"


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
    row_id = insert_unless_exists(table, "dedupe_key").execute(dict(
        user_id=user.id, kind=kind, to_email=user.email, subject=subject, body_text=body,
        dedupe_key=dedupe_key, status=OUTBOX_PENDING, attempts=0, next_attempt_at=None,
        last_error=None, sent_at=None, created_at=utcnow())).scalar()
    if row_id is None:
        return False
    live_updates.after_commit(user.id, kind)
    if current_app.config.get("MAIL_SEND_PROMPTLY"):
        db.session().info.setdefault(_SEND_SOON_KEY, []).append(row_id)
    return True


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


class DevMailbox:
    """The development transport: a message is delivered by being recorded as
    sent, and /dev/mailbox shows the sent rows."""

    def send_message(self, msg: EmailMessage) -> None:
        log.info("dev mailbox: %r to %s (see /dev/mailbox)", msg["Subject"], msg["To"])

    def quit(self) -> None:
        pass

    close = quit


def _connect() -> smtplib.SMTP | DevMailbox:
    cfg = current_app.config
    if cfg.get("DEV_MAILBOX"):
        return DevMailbox()
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
    return _deliver(claim_pending(limit), _server_down)


def send_now(row_ids: list[int]) -> SendReport:
    """The prompt try for just-committed rows: claim those still pending and due
    (a cron run may have taken them) and send them. A mail server that is down
    changes nothing on the rows, so the cron command sends them on its next run."""
    claimed = claim_due(NotificationOutbox, sa.and_(NotificationOutbox.status == OUTBOX_PENDING,
                                                    NotificationOutbox.id.in_(row_ids)),
                        lease=CLAIM_LEASE, limit=len(row_ids), order_by=[NotificationOutbox.id])
    return _deliver(claimed, _leave_for_cron)


def _deliver(claimed: list[int], on_server_down) -> SendReport:
    """Send the claimed rows over one connection; `on_server_down(ids, report)`
    decides what happens to the unsent rows when the server is unreachable."""
    report = SendReport()
    if not claimed:
        return report
    try:
        smtp = _connect()
    except SERVER_DOWN as exc:
        report.server_error = f"{type(exc).__name__}: {exc}"
        on_server_down(claimed, report)
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
                on_server_down(claimed[position:], report)
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


def _leave_for_cron(row_ids: list[int], report: SendReport) -> None:
    """The prompt try found no mail server: end our claim so the rows are due for
    the cron command at once, counting no attempt (cron's own tries back off)."""
    log.warning("mail server %s:%s unreachable (%s); %s email(s) wait for "
                "`flask notifications send`", current_app.config["MAIL_SERVER"],
                current_app.config["MAIL_PORT"], report.server_error, len(row_ids))
    report.retrying += len(row_ids)
    db.session.execute(sa.update(NotificationOutbox)
                       .where(NotificationOutbox.id.in_(row_ids),
                              NotificationOutbox.status == OUTBOX_PENDING)
                       .values(next_attempt_at=None, last_error=report.server_error[:4000])
                       .execution_options(synchronize_session=False))
    db.session.commit()


class _PromptSender:
    """One background thread per process that runs `send_now` for rows whose
    transaction has committed. Created lazily, and again in a forked child."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = None
        self._executor = None
        self._futures: set[Future] = set()

    def submit(self, app, row_ids: list[int]) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiffin-mail")
                self._pid, self._futures = os.getpid(), set()
            future = self._executor.submit(self._run, app, row_ids)
            self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    @staticmethod
    def _run(app, row_ids: list[int]) -> None:
        with app.app_context():
            try:
                send_now(row_ids)
            except Exception:  # the rows are still in the outbox; cron will send them
                db.session.rollback()
                log.exception("prompt send of email(s) %s failed; cron will retry", row_ids)
            finally:
                db.session.remove()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the sends already started; True if all finished (tests, shutdown)."""
        with self._lock:
            futures = set(self._futures)
        return not wait(futures, timeout=timeout).not_done


prompt_sender = _PromptSender()


@sa.event.listens_for(Session, "after_commit")
def _send_after_commit(session) -> None:
    row_ids = session.info.pop(_SEND_SOON_KEY, None)
    if row_ids and has_app_context():
        prompt_sender.submit(current_app._get_current_object(), row_ids)


@sa.event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session, _previous_transaction) -> None:
    session.info.pop(_SEND_SOON_KEY, None)


@dataclass
class MailboxMessage:
    headers: list[tuple[str, str]]
    body: str
    sent_at: object


def dev_mailbox(limit: int = 50) -> list[MailboxMessage]:
    """Sent emails, newest first, as the shopper would get them (the /dev/mailbox page)."""
    rows = db.session.scalars(sa.select(NotificationOutbox)
                              .where(NotificationOutbox.status == OUTBOX_SENT)
                              .order_by(NotificationOutbox.sent_at.desc(),
                                        NotificationOutbox.id.desc()).limit(limit)).all()
    messages = []
    for row in rows:
        msg = _message(row)
        messages.append(MailboxMessage(
            headers=[(k, msg[k]) for k in ("From", "To", "Subject")],
            body=msg.get_content(), sent_at=row.sent_at))
    return messages


def outbox_counts() -> dict[str, int]:
    """Rows per status, for the monitor and the CLI."""
    rows = db.session.execute(sa.select(NotificationOutbox.status, sa.func.count())
                              .group_by(NotificationOutbox.status)).all()
    return {status: n for status, n in rows}
