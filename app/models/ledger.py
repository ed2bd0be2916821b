import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import JSONType, UTCDateTime, utcnow

BUCKET_PLAN = "plan"
BUCKET_ADDON = "addon"


class CreditLedgerEntry(db.Model):
    """Every change to a user's meal credits. `source_key` is unique, so a grant
    for one payment (or one renewal invoice) can only ever be written once."""

    __tablename__ = "credit_ledger"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    subscription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("subscriptions.id"))
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"))
    bucket: Mapped[str] = mapped_column(sa.String(10))
    delta: Mapped[int]
    balance_after: Mapped[int]
    reason: Mapped[str] = mapped_column(sa.String(40))
    source_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.Index("ix_credit_ledger_user_created", "user_id", "created_at"),
        sa.Index("ix_credit_ledger_order", "order_id"),
    )


class AuditLogEntry(db.Model):
    """Who changed what, and why: every money or access change and every repair."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(80))  # "user:12", "webhook:stripe", "cli:fix"
    action: Mapped[str] = mapped_column(sa.String(80))
    entity_type: Mapped[str] = mapped_column(sa.String(40))
    entity_id: Mapped[str | None] = mapped_column(sa.String(64))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"))
    details: Mapped[dict | None] = mapped_column(JSONType)

    __table_args__ = (
        sa.Index("ix_audit_log_entity", "entity_type", "entity_id"),
        sa.Index("ix_audit_log_user", "user_id"),
        sa.Index("ix_audit_log_order", "order_id"),
        sa.Index("ix_audit_log_action_created", "action", "created_at"),
    )
