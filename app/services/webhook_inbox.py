"""The webhook inbox: store first, then act.

`store_event` commits the verified event before any handler runs, so an event
the route acknowledged can never be lost. `process_event` runs its handler,
records the attempt, and marks the event processed, ignored or failed (with
exponential backoff for the retry command, dead after WEBHOOK_MAX_ATTEMPTS).
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.gateways.base import GatewayEvent
from app.models import WebhookDeliveryAttempt, WebhookEvent
from app.models.types import utcnow
from app.models.webhook import EVENT_DEAD, EVENT_FAILED, EVENT_IGNORED, EVENT_PROCESSED

log = logging.getLogger("tiffin.webhooks")
BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 6 * 3600


def store_event(gateway: str, event: GatewayEvent, source_address: str | None
                ) -> tuple[WebhookEvent, bool]:
    """Commit the event; return (row, is_new). A known event id is not stored twice."""
    existing = db.session.scalars(sa.select(WebhookEvent).where(
        WebhookEvent.gateway == gateway, WebhookEvent.event_id == event.event_id)).first()
    if existing is not None:
        return existing, False
    row = WebhookEvent(gateway=gateway, event_id=event.event_id, event_type=event.event_type,
                       gateway_created_at=event.created_at, livemode=event.livemode,
                       payload=event.payload, source_address=source_address)
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # the same delivery arrived twice at once
        winner = db.session.scalars(sa.select(WebhookEvent).where(
            WebhookEvent.gateway == gateway, WebhookEvent.event_id == event.event_id)).one()
        return winner, False
    return row, True


def backoff_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0),
                                 BACKOFF_CAP_SECONDS))


def process_event(event: WebhookEvent, *, trigger: str = "delivery",
                  source_address: str | None = None) -> str:
    """Run the handler for a stored event and record the attempt. Never raises
    for a handler failure: the event is marked failed for the retry command."""
    from app.webhooks.handlers import dispatch

    event_pk = event.id
    started = time.monotonic()
    try:
        outcome = dispatch(event)
        error = None
    except Exception as exc:  # the handler's own transaction is already rolled back
        db.session.rollback()
        outcome, error = EVENT_FAILED, f"{type(exc).__name__}: {exc}"
        log.exception("webhook handler failed for event %s", event_pk)
    duration_ms = int((time.monotonic() - started) * 1000)

    event = db.session.get(WebhookEvent, event_pk, populate_existing=True)
    now = utcnow()
    event.attempts += 1
    if outcome == EVENT_FAILED:
        event.last_error = error[:4000]
        if event.attempts >= current_app.config["WEBHOOK_MAX_ATTEMPTS"]:
            event.status = EVENT_DEAD
            event.next_attempt_at = None
            log.error("webhook event %s:%s dead after %s attempts", event.gateway, event.event_id,
                      event.attempts)
        else:
            event.status = EVENT_FAILED
            event.next_attempt_at = now + backoff_delay(event.attempts)
    else:
        event.status = outcome
        event.processed_at = now
        event.next_attempt_at = None
    db.session.add(WebhookDeliveryAttempt(webhook_event_id=event.id, outcome=event.status,
                                          error=error, duration_ms=duration_ms,
                                          source_address=source_address, trigger=trigger))
    db.session.commit()
    return event.status


__all__ = ["EVENT_IGNORED", "EVENT_PROCESSED", "backoff_delay", "process_event", "store_event"]
