import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


class TestGatewayPayment(db.Model):
    """The test gateway's own memory (it plays a remote gateway): what happened to each
    of its checkout sessions. One row per session, so a second submission finds the first."""

    __tablename__ = "test_gateway_payments"
    __test__ = False  # not a pytest test class

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_order_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    outcome: Mapped[str] = mapped_column(sa.String(20))  # "paid" or "declined"
    payment_id: Mapped[str | None] = mapped_column(sa.String(64))
    reason: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
