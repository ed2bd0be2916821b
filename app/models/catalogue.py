import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow

PLAN_KIND_SUBSCRIPTION = "subscription"
PLAN_KIND_ADDON = "addon"


class MealPlan(db.Model):
    """Something the shop sells: a recurring meal plan or a one-time add-on meal pack."""

    __tablename__ = "meal_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    kind: Mapped[str] = mapped_column(sa.String(20), default=PLAN_KIND_SUBSCRIPTION)
    price_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    # None for add-on packs; "week" or "month" for plans.
    billing_interval: Mapped[str | None] = mapped_column(sa.String(10))
    interval_count: Mapped[int] = mapped_column(default=1, server_default="1")
    meals_per_period: Mapped[int]
    is_active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    sort_order: Mapped[int] = mapped_column(default=0, server_default="0")
    stripe_price_id: Mapped[str | None] = mapped_column(sa.String(64))
    razorpay_plan_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.CheckConstraint("price_minor >= 0", name="price_non_negative"),
        sa.CheckConstraint("meals_per_period > 0", name="meals_positive"),
        sa.CheckConstraint("kind IN ('subscription', 'addon')", name="kind_known"),
        sa.Index("ix_meal_plans_active_sort", "is_active", "sort_order"),
    )

    @property
    def is_recurring(self) -> bool:
        return self.kind == PLAN_KIND_SUBSCRIPTION

    @property
    def price_display(self) -> str:
        from app.money import format_money

        return format_money(self.price_minor, self.currency)

    @property
    def interval_label(self) -> str:
        if not self.is_recurring:
            return "one-time"
        unit = self.billing_interval or "month"
        return f"every {self.interval_count} {unit}s" if self.interval_count > 1 else f"per {unit}"
