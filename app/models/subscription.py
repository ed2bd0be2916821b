import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.types import UTCDateTime, utcnow

SUB_ACTIVE = "active"
SUB_TRIALING = "trialing"
SUB_PAST_DUE = "past_due"
SUB_CANCELED = "canceled"
SUB_INCOMPLETE = "incomplete"
SUB_UNPAID = "unpaid"
SUB_REVOKED = "revoked"      # access taken away: full refund, dispute, deleted customer
SUB_COMPLETED = "completed"  # a fixed-term plan ran its course (Razorpay)
LIVE_STATUSES = (SUB_ACTIVE, SUB_TRIALING, SUB_PAST_DUE)
_LIVE_SQL = "status IN ('active', 'trialing', 'past_due')"
# Live, but not linked to the gateway's subscription: the monitor's
# subscription_without_gateway_id check reads only these rows.
_UNLINKED_SQL = f"gateway_subscription_id IS NULL AND {_LIVE_SQL}"


class Subscription(db.Model):
    """A shopper's entitlement to a meal plan, started by exactly one order."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    meal_plan_id: Mapped[int] = mapped_column(sa.ForeignKey("meal_plans.id"))
    # A plan change the gateway applies when the current period ends (Razorpay);
    # the renewal that starts the next period switches to it.
    scheduled_meal_plan_id: Mapped[int | None] = mapped_column(sa.ForeignKey("meal_plans.id"))
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), unique=True)
    gateway: Mapped[str] = mapped_column(sa.String(20))
    gateway_subscription_id: Mapped[str | None] = mapped_column(sa.String(255))
    gateway_customer_id: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(20), default=SUB_ACTIVE)
    current_period_start: Mapped[object] = mapped_column(UTCDateTime)
    current_period_end: Mapped[object] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    canceled_at: Mapped[object | None] = mapped_column(UTCDateTime)
    grace_period_ends_at: Mapped[object | None] = mapped_column(UTCDateTime)
    access_revoked_at: Mapped[object | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(sa.String(64))
    # Gateway timestamp of the newest event applied; older events never overwrite.
    last_gateway_event_at: Mapped[object | None] = mapped_column(UTCDateTime)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    user = relationship("User", back_populates="subscriptions")
    meal_plan = relationship("MealPlan", foreign_keys=[meal_plan_id])
    scheduled_meal_plan = relationship("MealPlan", foreign_keys=[scheduled_meal_plan_id])
    order = relationship("Order", back_populates="subscription")

    __table_args__ = (
        sa.UniqueConstraint("gateway", "gateway_subscription_id", name="uq_subscriptions_gateway_sub"),
        # One live subscription per user, enforced by the database on both engines.
        sa.Index("uq_subscriptions_one_live_per_user", "user_id", unique=True,
                 sqlite_where=sa.text(_LIVE_SQL), postgresql_where=sa.text(_LIVE_SQL)),
        sa.Index("ix_subscriptions_user_status", "user_id", "status"),
        sa.Index("ix_subscriptions_status_period_end", "status", "current_period_end"),
        sa.Index("ix_subscriptions_unlinked", "id", sqlite_where=sa.text(_UNLINKED_SQL),
                 postgresql_where=sa.text(_UNLINKED_SQL)),
    )

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    def __repr__(self) -> str:
        return f"<Subscription {self.id} user={self.user_id} {self.status}>"
