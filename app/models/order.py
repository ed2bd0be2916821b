import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.types import JSONType, UTCDateTime, utcnow

# An order only moves forward through these; services enforce the transitions.
ORDER_PENDING = "pending"            # checkout started, no money yet
ORDER_PAID = "paid"                  # money taken and fulfilled
ORDER_FAILED = "failed"              # declined / failed at the gateway
ORDER_CANCELED = "canceled"          # shopper abandoned checkout (cancel link or expiry)
ORDER_NEEDS_REVIEW = "needs_review"  # money may have been taken but fulfilment was refused
ORDER_REFUNDED = "refunded"
ORDER_PARTIALLY_REFUNDED = "partially_refunded"
ORDER_DISPUTED = "disputed"
ORDER_STATUSES = (ORDER_PENDING, ORDER_PAID, ORDER_FAILED, ORDER_CANCELED, ORDER_NEEDS_REVIEW,
                  ORDER_REFUNDED, ORDER_PARTIALLY_REFUNDED, ORDER_DISPUTED)

ORDER_KIND_NEW = "subscription"  # first payment of a plan
ORDER_KIND_RENEWAL = "renewal"   # a later period of the same subscription
ORDER_KIND_ADDON = "addon"       # a one-time meal pack
ORDER_KIND_PLAN_CHANGE = "plan_change"  # the difference paid to move a live plan to a dearer one


_METADATA_MISMATCH = ("gateway_metadata_user_id IS NOT NULL "
                      "AND gateway_metadata_user_id <> user_id")


def new_order_reference() -> str:
    """Short, unguessable reference shown to shoppers and sent to gateways."""
    return "TF-" + secrets.token_hex(6).upper()


class Order(db.Model):
    """One payment (attempt) at one gateway for one plan or pack."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(sa.String(32), unique=True, default=new_order_reference)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    meal_plan_id: Mapped[int] = mapped_column(sa.ForeignKey("meal_plans.id"))
    # Renewals point at the order that started their subscription.
    parent_order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"))
    kind: Mapped[str] = mapped_column(sa.String(20), default=ORDER_KIND_NEW)
    status: Mapped[str] = mapped_column(sa.String(20), default=ORDER_PENDING)
    gateway: Mapped[str] = mapped_column(sa.String(20))
    gateway_order_id: Mapped[str | None] = mapped_column(sa.String(255))
    gateway_payment_id: Mapped[str | None] = mapped_column(sa.String(255))
    gateway_customer_id: Mapped[str | None] = mapped_column(sa.String(255))
    # The user id the gateway's own metadata names (the monitor flags disagreement).
    gateway_metadata_user_id: Mapped[int | None]
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    refunded_minor: Mapped[int] = mapped_column(default=0, server_default="0")
    # Double-click protection: a checkout form carries a one-time token.
    checkout_token: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(sa.Text)
    failure_code: Mapped[str | None] = mapped_column(sa.String(64))
    failure_message: Mapped[str | None] = mapped_column(sa.Text)
    gateway_data: Mapped[dict | None] = mapped_column(JSONType)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    paid_at: Mapped[object | None] = mapped_column(UTCDateTime)
    # Set when the gateway reports an authorised payment we have not captured yet
    # (Razorpay auto-refunds those after a few days; the monitor watches them).
    authorized_at: Mapped[object | None] = mapped_column(UTCDateTime)
    # After this the checkout is closed: no continuing to pay (a late payment is still
    # honoured). Stripe's session may live longer when its limits clamp the lifetime.
    checkout_expires_at: Mapped[object | None] = mapped_column(UTCDateTime)
    # The pending page's own question to the gateway: when we last asked (at most
    # once per GATEWAY_STATUS_CHECK_SECONDS across workers) and what it answered.
    gateway_checked_at: Mapped[object | None] = mapped_column(UTCDateTime)
    gateway_said: Mapped[str | None] = mapped_column(sa.String(20))
    # When the shopper first came back to a pending order: the pending page refreshes
    # itself for a bounded time after it.
    returned_at: Mapped[object | None] = mapped_column(UTCDateTime)

    user = relationship("User", back_populates="orders", foreign_keys=[user_id])
    meal_plan = relationship("MealPlan")
    parent_order = relationship("Order", remote_side=[id])
    subscription = relationship("Subscription", back_populates="order", uselist=False)

    __table_args__ = (
        sa.UniqueConstraint("gateway", "gateway_order_id", name="uq_orders_gateway_order"),
        sa.UniqueConstraint("gateway", "gateway_payment_id", name="uq_orders_gateway_payment"),
        sa.CheckConstraint("amount_minor >= 0", name="amount_non_negative"),
        sa.CheckConstraint("refunded_minor >= 0", name="refunded_non_negative"),
        sa.Index("ix_orders_user_created", "user_id", "created_at"),
        sa.Index("ix_orders_status_created", "status", "created_at"),
        sa.Index("ix_orders_gateway_created", "gateway", "created_at"),
        sa.Index("ix_orders_parent", "parent_order_id"),
        sa.Index("ix_orders_status_authorized", "status", "authorized_at"),
        # The console: paid orders and revenue per day, and search by gateway customer id.
        sa.Index("ix_orders_paid_at", "paid_at"),
        sa.Index("ix_orders_gateway_customer", "gateway_customer_id"),
        # The monitor's "metadata names another user" check reads only these rows.
        sa.Index("ix_orders_metadata_user_mismatch", "id",
                 sqlite_where=sa.text(_METADATA_MISMATCH), postgresql_where=sa.text(_METADATA_MISMATCH)),
    )

    @property
    def amount_display(self) -> str:
        from app.money import format_money

        return format_money(self.amount_minor, self.currency)

    @property
    def item_name(self) -> str:
        """What the order bought, as the shopper reads it in order lists."""
        if self.kind == ORDER_KIND_PLAN_CHANGE:
            return f"Change to {self.meal_plan.name} (the price difference)"
        return self.meal_plan.name

    @property
    def is_paid(self) -> bool:
        return self.status in (ORDER_PAID, ORDER_PARTIALLY_REFUNDED)

    def __repr__(self) -> str:
        return f"<Order {self.reference} {self.gateway}:{self.gateway_order_id} {self.status}>"
