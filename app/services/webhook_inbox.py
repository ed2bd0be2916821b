"""The webhook inbox: store first, then act.

`store_event` commits the verified event before any handler runs, so an event
the route acknowledged can never be lost. `process_event` runs its handler,
records the attempt, and marks the event processed, ignored or failed (with
exponential backoff for the retry command, dead after WEBHOOK_MAX_ATTEMPTS).

Work is claimed through `next_attempt_at`, which doubles as a lease: a new
event is stored with `next_attempt_at = now + WEBHOOK_STUCK_AFTER_SECONDS`
(the delivering request processes it inline), and `claim_due_events` moves it
forward again before a retry runs. An event whose process died between store
and process therefore becomes due once the lease runs out, and two retry
workers never run one event at the same time: candidates are locked with
`FOR UPDATE SKIP LOCKED` on PostgreSQL and the claim itself is a
compare-and-set on `next_attempt_at`, which also holds on SQLite.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from app import logs, metrics
from app.extensions import db
from app.gateways.base import GatewayEvent
from app.models import WebhookDeliveryAttempt, WebhookEvent
from app.models.types import utcnow
from app.models.webhook import (EVENT_DEAD, EVENT_FAILED, EVENT_IGNORED, EVENT_PROCESSED,
                                EVENT_RECEIVED)
from app.services.sql import DriverStatement, insert_unless_exists
from app.services.work_claims import claim_due

log = logging.getLogger("tiffin.webhooks")
BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 6 * 3600
RETRYABLE = (EVENT_RECEIVED, EVENT_FAILED)
MIN_CLAIM_LEASE_SECONDS = 60


def _stuck_after() -> timedelta:
    """How long the delivering request may take before a stored event counts as stuck."""
    return timedelta(seconds=current_app.config["WEBHOOK_STUCK_AFTER_SECONDS"])


def _lease() -> timedelta:
    """How long a retry worker's claim on an event lasts."""
    return max(_stuck_after(), timedelta(seconds=MIN_CLAIM_LEASE_SECONDS))


def _autocommit():
    """A connection on which each statement commits by itself: storing an event is
    one durable INSERT, with no BEGIN/COMMIT round trips around it."""
    return db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def store_event(gateway: str, event: GatewayEvent, source_address: str | None
                ) -> WebhookEvent | None:
    """Commit the event and return it, or None when this gateway event id is already
    stored (a redelivery, or the same delivery racing itself).

    One INSERT … ON CONFLICT DO NOTHING answers both: the unique key
    (gateway, event_id) is its conflict arbiter, so a duplicate is found through that
    index whatever the table's statistics say, and costs no write. (A separate lookup
    was planned onto ix_webhook_events_gateway_received on a new, empty table, and a
    prepared statement kept that plan as the table grew.)

    Raises SQLAlchemyError when the database cannot store it (the route answers 5xx).
    """
    now = utcnow()
    values = dict(gateway=gateway, event_id=event.event_id, event_type=event.event_type,
                  gateway_created_at=event.created_at, livemode=event.livemode,
                  payload=event.payload, source_address=source_address, status=EVENT_RECEIVED,
                  attempts=0, received_at=now, next_attempt_at=now + _stuck_after())
    with _autocommit() as conn:
        new_id = insert_unless_exists(WebhookEvent.__table__, "gateway", "event_id").execute(
            values, connection=conn).scalar()
    # The handler gets the stored event as we hold it: no second read.
    return WebhookEvent(id=new_id, **values) if new_id is not None else None


def backoff_delay(attempts: int) -> timedelta:
    """60 s, 120 s, 240 s … after the n-th failed attempt, capped at six hours."""
    return timedelta(seconds=min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0),
                                 BACKOFF_CAP_SECONDS))


def process_event(event: WebhookEvent, *, trigger: str = "delivery",
                  source_address: str | None = None) -> str:
    """Run the handler for a stored event and record the attempt.

    Never raises for a handler failure: the event is marked failed (or dead after
    WEBHOOK_MAX_ATTEMPTS) with the error, for the retry command. Raises only when
    the outcome itself cannot be written (database gone); the event then stays
    claimed until its lease runs out and the retry command picks it up.
    """
    from app.webhooks.handlers import dispatch

    event_pk = event.id
    logs.bind(gateway_event_id=event.event_id, order_reference=None)
    started = time.monotonic()
    try:
        outcome = dispatch(event)
        error = None
    except Exception as exc:  # the handler's own transaction is rolled back here
        db.session.rollback()
        outcome, error = EVENT_FAILED, f"{type(exc).__name__}: {exc}"
        log.exception("webhook handler failed for event %s", event_pk)
    duration_ms = int((time.monotonic() - started) * 1000)

    now = utcnow()
    if outcome != EVENT_FAILED:
        _record_success(event_pk, outcome, now, duration_ms, source_address, trigger)
        metrics.observe_webhook(event.gateway, outcome, duration_ms / 1000)
        return outcome

    event = db.session.get(WebhookEvent, event_pk, populate_existing=True)
    event.attempts += 1
    if outcome == EVENT_FAILED:
        event.last_error = error[:4000]
        if event.attempts >= current_app.config["WEBHOOK_MAX_ATTEMPTS"]:
            event.status = EVENT_DEAD
            event.next_attempt_at = None
            log.error("webhook event %s:%s dead-lettered after %s attempts", event.gateway,
                      event.event_id, event.attempts)
        else:
            event.status = EVENT_FAILED
            event.next_attempt_at = now + backoff_delay(event.attempts)
    else:
        event.status = outcome
        event.processed_at = now
        event.next_attempt_at = None
        event.last_error = None
    db.session.add(WebhookDeliveryAttempt(webhook_event_id=event.id, outcome=event.status,
                                          error=error, duration_ms=duration_ms,
                                          source_address=source_address, trigger=trigger))
    db.session.commit()
    metrics.observe_webhook(event.gateway, event.status, duration_ms / 1000)
    return event.status


_EVENTS = WebhookEvent.__table__
_ATTEMPTS = WebhookDeliveryAttempt.__table__
# Parameter names differ from column names: in an INSERT, a parameter named after a
# column would be taken as that column's value.
_FINISH = (sa.update(_EVENTS).where(_EVENTS.c.id == sa.bindparam("p_event"))
           .values(attempts=_EVENTS.c.attempts + 1, status=sa.bindparam("p_outcome"),
                   processed_at=sa.bindparam("p_now", type_=_EVENTS.c.processed_at.type),
                   next_attempt_at=None, last_error=None))
# PostgreSQL: the status update and the attempt row in one statement.
_finished = _FINISH.returning(_EVENTS.c.id).cte("finished")
_FINISH_AND_RECORD = DriverStatement(sa.insert(_ATTEMPTS).from_select(
    ["webhook_event_id", "started_at", "outcome", "duration_ms", "source_address", "trigger"],
    sa.select(_finished.c.id, sa.bindparam("p_now", type_=_ATTEMPTS.c.started_at.type),
              sa.bindparam("p_outcome", type_=_ATTEMPTS.c.outcome.type),
              sa.bindparam("p_duration_ms", type_=_ATTEMPTS.c.duration_ms.type),
              sa.bindparam("p_source", type_=_ATTEMPTS.c.source_address.type),
              sa.bindparam("p_trigger", type_=_ATTEMPTS.c.trigger.type))))


def _record_success(event_pk: int, outcome: str, now, duration_ms: int,
                    source_address: str | None, trigger: str) -> None:
    """Mark a handled event processed/ignored and record the attempt.

    The handler's own changes are committed first. The bookkeeping follows as
    one statement (two on SQLite): if it were lost, the event would stay
    `received` and the retry command would re-run its handler, which is idempotent.
    """
    db.session.commit()
    params = dict(p_event=event_pk, p_outcome=outcome, p_now=now, p_duration_ms=duration_ms,
                  p_source=source_address, p_trigger=trigger)
    with _autocommit() as conn:
        if conn.dialect.name == "postgresql":
            _FINISH_AND_RECORD.execute(params, connection=conn)
        else:
            conn.execute(_FINISH, params)
            conn.execute(sa.insert(_ATTEMPTS), dict(
                webhook_event_id=event_pk, started_at=now, outcome=outcome, error=None,
                duration_ms=duration_ms, source_address=source_address, trigger=trigger))


def claim_due_events(limit: int = 50) -> list[int]:
    """Claim up to `limit` events that are due for another attempt; return their ids.

    Due means failed with its backoff elapsed, or received (stored, never finished)
    with its processing lease elapsed.
    """
    return claim_due(WebhookEvent, WebhookEvent.status.in_(RETRYABLE), lease=_lease(),
                     limit=limit, order_by=[WebhookEvent.next_attempt_at, WebhookEvent.id])


def retry_due(limit: int = 50) -> dict[str, int]:
    """Claim and re-run due events; return a count per outcome."""
    counts: dict[str, int] = {}
    claimed_at = utcnow()
    for event_pk in claim_due_events(limit):
        if utcnow() - claimed_at > _lease() / 2:
            break  # our claim on the rest is running out; another run will take them
        event = db.session.get(WebhookEvent, event_pk)
        status = process_event(event, trigger="retry")
        counts[status] = counts.get(status, 0) + 1
    return counts


def replay(event: WebhookEvent) -> str:
    """Re-run one event by hand, whatever its status (handlers sync state, so it is safe).

    A dead event gets a fresh set of attempts, so a failure marks it failed again.
    """
    if event.status == EVENT_DEAD:
        event.attempts = 0
        db.session.commit()
    return process_event(event, trigger="replay")


def replay_failed_mentioning(gateway: str, gateway_id: str) -> dict[str, int]:
    """Re-run, oldest first, the failed or dead events of `gateway` whose payload names
    `gateway_id` (e.g. renewals that found no subscription before a repair linked it).
    Returns a count per outcome."""
    payload_text = sa.cast(WebhookEvent.payload, sa.Text)
    events = db.session.scalars(sa.select(WebhookEvent).where(
        WebhookEvent.gateway == gateway, WebhookEvent.status.in_((EVENT_FAILED, EVENT_DEAD)),
        payload_text.contains(f'"{gateway_id}"', autoescape=True))
        .order_by(WebhookEvent.received_at, WebhookEvent.id)).all()
    counts: dict[str, int] = {}
    for event in events:
        status = replay(event)
        counts[status] = counts.get(status, 0) + 1
    return counts


def lookup(reference: str) -> WebhookEvent | None:
    """An event by the gateway's event id, or by our numeric id."""
    row = db.session.scalars(sa.select(WebhookEvent).where(WebhookEvent.event_id == reference)
                             .order_by(WebhookEvent.id)).first()
    if row is None and reference.isdigit():
        row = db.session.get(WebhookEvent, int(reference))
    return row


def events_with_status(status: str | None, limit: int = 100) -> list[WebhookEvent]:
    query = sa.select(WebhookEvent).order_by(WebhookEvent.received_at.desc(),
                                             WebhookEvent.id.desc()).limit(limit)
    if status:
        query = query.where(WebhookEvent.status == status)
    return db.session.scalars(query).all()


def dead_letter_count() -> int:
    """Dead-lettered events, for the monitor."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)
                             .where(WebhookEvent.status == EVENT_DEAD))


__all__ = ["EVENT_IGNORED", "EVENT_PROCESSED", "backoff_delay", "claim_due_events",
           "dead_letter_count", "events_with_status", "lookup", "process_event", "replay",
           "replay_failed_mentioning",
           "retry_due", "store_event"]
