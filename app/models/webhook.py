import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.types import JSONType, UTCDateTime, utcnow

EVENT_RECEIVED = "received"      # stored, not yet handled (or the process died mid-way)
EVENT_PROCESSED = "processed"
EVENT_IGNORED = "ignored"        # a type we do not act on; stored for the record
EVENT_FAILED = "failed"          # the handler raised; the retry command will try again
EVENT_DEAD = "dead"              # gave up after WEBHOOK_MAX_ATTEMPTS; the monitor reports it
EVENT_STATUSES = (EVENT_RECEIVED, EVENT_PROCESSED, EVENT_IGNORED, EVENT_FAILED, EVENT_DEAD)


class WebhookEvent(db.Model):
    """A verified gateway event, stored before anything acts on it."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway: Mapped[str] = mapped_column(sa.String(20))
    event_id: Mapped[str] = mapped_column(sa.String(255))
    event_type: Mapped[str] = mapped_column(sa.String(100))
    gateway_created_at: Mapped[object | None] = mapped_column(UTCDateTime)
    livemode: Mapped[bool | None]
    payload: Mapped[dict] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(sa.String(20), default=EVENT_RECEIVED)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[object | None] = mapped_column(UTCDateTime)
    source_address: Mapped[str | None] = mapped_column(sa.String(64))
    received_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[object | None] = mapped_column(UTCDateTime)

    delivery_attempts = relationship("WebhookDeliveryAttempt", back_populates="event",
                                     order_by="WebhookDeliveryAttempt.id", lazy="dynamic")

    __table_args__ = (
        sa.UniqueConstraint("gateway", "event_id", name="uq_webhook_events_gateway_event"),
        sa.Index("ix_webhook_events_status_next", "status", "next_attempt_at"),
        sa.Index("ix_webhook_events_gateway_received", "gateway", "received_at"),
        sa.Index("ix_webhook_events_received", "received_at"),  # the console's inbox, newest first
    )

    def __repr__(self) -> str:
        return f"<WebhookEvent {self.gateway}:{self.event_id} {self.event_type} {self.status}>"


class WebhookDeliveryAttempt(db.Model):
    """One attempt to process a stored event: when, how it ended, how long it took."""

    __tablename__ = "webhook_delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_event_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_events.id", ondelete="CASCADE"))
    started_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(sa.String(20))
    error: Mapped[str | None] = mapped_column(sa.Text)
    duration_ms: Mapped[int] = mapped_column(default=0)
    source_address: Mapped[str | None] = mapped_column(sa.String(64))
    trigger: Mapped[str] = mapped_column(sa.String(20), default="delivery")  # delivery|retry|replay

    event = relationship("WebhookEvent", back_populates="delivery_attempts")

    __table_args__ = (
        sa.Index("ix_webhook_delivery_attempts_event", "webhook_event_id"),
        sa.Index("ix_webhook_delivery_attempts_started", "started_at"),  # deliveries per hour
    )
