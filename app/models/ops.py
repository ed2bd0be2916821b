import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import JSONType, UTCDateTime, utcnow

OUTBOX_PENDING = "pending"
OUTBOX_SENT = "sent"
OUTBOX_FAILED = "failed"  # gave up after the attempt limit; the monitor reports it


class NotificationOutbox(db.Model):
    """An email written in the same transaction as the change it announces and
    sent later by `flask notifications send`; `dedupe_key` stops double sends."""

    __tablename__ = "notification_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(sa.String(40))
    to_email: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(200))
    body_text: Mapped[str] = mapped_column(sa.Text)
    dedupe_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    status: Mapped[str] = mapped_column(sa.String(20), default=OUTBOX_PENDING)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[object | None] = mapped_column(UTCDateTime)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[object | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.Index("ix_notification_outbox_status_next", "status", "next_attempt_at"),
        sa.Index("ix_notification_outbox_user", "user_id"),
    )


class MonitorAlert(db.Model):
    """One finding the monitor has alerted on, so repeated runs do not re-send it."""

    __tablename__ = "monitor_alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    severity: Mapped[str] = mapped_column(sa.String(10))
    summary: Mapped[str] = mapped_column(sa.Text)
    first_seen_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    last_sent_at: Mapped[object | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[object | None] = mapped_column(UTCDateTime)


class MonitorRun(db.Model):
    """A record of each monitor run, for the health summary."""

    __tablename__ = "monitor_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[object | None] = mapped_column(UTCDateTime)
    exit_code: Mapped[int | None]
    summary: Mapped[dict | None] = mapped_column(JSONType)

    __table_args__ = (sa.Index("ix_monitor_runs_started", "started_at"),)


class JobLock(db.Model):
    """A named lease so two overlapping cron runs of one job never both act."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(120))
    acquired_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[object] = mapped_column(UTCDateTime)
