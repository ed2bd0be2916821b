from flask_login import UserMixin
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


ROLE_SHOPPER = "shopper"
ROLE_OPERATOR = "operator"  # may use the operator console under /ops/
ROLES = (ROLE_SHOPPER, ROLE_OPERATOR)


class User(UserMixin, db.Model):
    """A shopper. `subscription_status` and the credit balances are denormalised
    copies kept in step by the services (the monitor checks they agree)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    subscription_status: Mapped[str] = mapped_column(sa.String(20), default="none", server_default="none")
    # Plan meals reset every period; add-on meals are bought outright and carry over.
    plan_meal_credits: Mapped[int] = mapped_column(default=0, server_default="0")
    addon_meal_credits: Mapped[int] = mapped_column(default=0, server_default="0")
    stripe_customer_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    razorpay_customer_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    # Granted and revoked only by `flask users grant-operator/revoke-operator` (audited).
    role: Mapped[str] = mapped_column(sa.String(20), default=ROLE_SHOPPER,
                                      server_default=ROLE_SHOPPER)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[object | None] = mapped_column(UTCDateTime)

    orders = relationship("Order", back_populates="user", lazy="dynamic",
                          foreign_keys="Order.user_id")
    subscriptions = relationship("Subscription", back_populates="user", lazy="dynamic")

    __table_args__ = (
        sa.CheckConstraint("plan_meal_credits >= 0", name="plan_credits_non_negative"),
        sa.CheckConstraint("addon_meal_credits >= 0", name="addon_credits_non_negative"),
        sa.CheckConstraint("role IN ('shopper', 'operator')", name="role_known"),
    )

    @property
    def is_operator(self) -> bool:
        return self.role == ROLE_OPERATOR

    @property
    def meal_credits(self) -> int:
        return self.plan_meal_credits + self.addon_meal_credits

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_active(self) -> bool:  # Flask-Login: deleted accounts cannot sign in
        return self.deleted_at is None

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


# The console's searches by the start of a name (case-insensitive) or an email; on
# PostgreSQL the migration builds them with text_pattern_ops, so LIKE 'prefix%' uses them.
sa.Index("ix_users_name_lower", sa.func.lower(User.name))
sa.Index("ix_users_email_pattern", User.email, postgresql_ops={"email": "text_pattern_ops"})
