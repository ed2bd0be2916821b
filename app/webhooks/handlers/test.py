"""Handlers for the built-in test gateway's events."""
from __future__ import annotations

import logging

from app.errors import TiffinError
from app.models.webhook import EVENT_PROCESSED
from app.services import unmatched
from app.services.checkout import mark_order_failed
from app.services.fulfilment import _create_subscription_and_order, find_order, payer

log = logging.getLogger("tiffin.webhooks.test")
ACTOR = "webhook:test"


def payment_succeeded(event) -> str:
    data = event.payload["data"]
    metadata = data.get("metadata") or {}
    found = payer("test", data["order_id"])  # the stored order's owner and plan
    if found is None:
        # Signed by the gateway, but no order of ours: held for review, nothing granted.
        unmatched.hold_payment("test", data["order_id"], data.get("payment_id"),
                               data.get("amount_minor"), data.get("currency"),
                               user_id=metadata.get("user_id"), plan_id=metadata.get("plan_id"),
                               event=event, actor=ACTOR)
        return EVENT_PROCESSED
    user, plan = found
    try:
        _create_subscription_and_order(
            user, plan, "test", data["order_id"], data["payment_id"], int(data["amount_minor"]),
            data["currency"], actor=ACTOR, metadata_user_id=metadata.get("user_id"))
    except TiffinError as exc:
        # Refused and recorded (order set to needs_review); retrying cannot help.
        log.warning("test event %s refused: %s", event.event_id, exc.code)
    return EVENT_PROCESSED


def payment_failed(event) -> str:
    data = event.payload["data"]
    order = find_order("test", data["order_id"])
    if order is not None:
        mark_order_failed(order, data.get("failure_code") or "declined",
                          data.get("failure_message"), actor=ACTOR)
    return EVENT_PROCESSED


HANDLERS = {
    "payment.succeeded": payment_succeeded,
    "payment.failed": payment_failed,
}
