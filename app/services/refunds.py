"""Refunds an operator starts from Tiffin (`flask orders refund`).

The gateway refunds first, with an idempotency key derived from the order's
state, so re-running the same command before the refund lands cannot refund
twice. A refund the gateway reports as processed is recorded at once through
`lifecycle.record_refund` (a full refund revokes access); one still pending is
recorded when the gateway's refund webhook arrives. Both paths carry the
cumulative amount, so recording twice changes nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from app.extensions import db
from app.gateways import get_gateway
from app.models import Order
from app.models.order import ORDER_PAID, ORDER_PARTIALLY_REFUNDED
from app.services import audit, lifecycle, unmatched

log = logging.getLogger("tiffin.refunds")


class RefundRefused(Exception):
    """The order cannot be refunded as asked; the message says why."""


@dataclass
class RefundOutcome:
    order: Order
    refund_id: str
    amount_minor: int
    gateway_status: str  # the gateway's refund status ("processed", "pending")
    order_status: str

    def as_dict(self) -> dict:
        return {"reference": self.order.reference, "refunded": True, "refund_id": self.refund_id,
                "gateway": self.order.gateway, "amount_minor": self.amount_minor,
                "currency": self.order.currency, "gateway_status": self.gateway_status,
                "order_status": self.order_status,
                "refunded_minor": self.order.refunded_minor}


def refund_order(reference: str, amount_minor: int | None = None, *, actor: str) -> RefundOutcome:
    """Refund `amount_minor` (default: all that is left) of a paid order at its gateway.

    Raises RefundRefused for an unknown, unpaid or over-refunded order, or a
    gateway without refunds; TiffinError GATEWAY_UNAVAILABLE when the gateway fails.
    """
    order = db.session.scalars(sa.select(Order).where(Order.reference == reference)).first()
    if order is None:
        raise RefundRefused(f"no order {reference}")
    refundable = order.status in (ORDER_PAID, ORDER_PARTIALLY_REFUNDED) or unmatched.is_held(order)
    if not refundable or not order.gateway_payment_id:
        raise RefundRefused(f"order {reference} is {order.status}; only paid orders (and payments "
                            "held for review) can be refunded")
    remaining = order.amount_minor - order.refunded_minor
    amount = remaining if amount_minor is None else amount_minor
    if amount <= 0 or amount > remaining:
        raise RefundRefused(f"order {reference}: can refund 1..{remaining} {order.currency}, "
                            f"asked {amount}")
    gateway = get_gateway(order.gateway)
    if not hasattr(gateway, "refund_payment"):
        raise RefundRefused(f"gateway {order.gateway} cannot refund from Tiffin")
    # Same order, amount and refund so far: same key, so a repeat refunds once.
    refunded_before = order.refunded_minor
    key = f"{order.reference}-r{refunded_before}-{amount}"
    db.session.rollback()  # no transaction held open across the gateway call
    refund = gateway.refund_payment(gateway_payment_id=order.gateway_payment_id,
                                    amount_minor=amount, idempotency_key=key,
                                    notes={"reference": order.reference, "actor": actor})
    order = db.session.get(Order, order.id)
    audit.record(actor, "refund_requested", "order", order.id, user_id=order.user_id,
                 order_id=order.id, refund_id=refund["id"], amount_minor=amount,
                 gateway_status=refund.get("status"), idempotency_key=key)
    db.session.commit()
    status = order.status
    if refund.get("status") == "processed":
        # The total this refund makes, whatever a webhook recorded meanwhile.
        status = lifecycle.record_refund(order, refunded_total_minor=refunded_before + amount,
                                         refund_id=refund["id"], actor=actor)
    log.info("refund %s of %s %s for %s: %s", refund["id"], amount, order.currency, reference,
             refund.get("status"))
    return RefundOutcome(order, refund["id"], amount, str(refund.get("status")), status)
