"""A redelivered event is found through the unique key (gateway, event_id), whatever
the table's statistics say: a new shop's empty, never-analysed table and a large one.

PostgreSQL planned the old separate duplicate lookup onto ix_webhook_events_gateway_received
on an empty table, and a prepared statement kept that plan as the table grew.
"""
from __future__ import annotations

import sqlalchemy as sa
from psycopg.types.json import Jsonb

from app.extensions import db
from app.models import WebhookEvent
from app.models.types import utcnow
from app.services.sql import insert_unless_exists
from tests.pipeline.conftest import event_body, post_webhook

UNIQUE_KEY = "uq_webhook_events_gateway_event"


def _store_plan() -> str:
    """EXPLAIN of the statement that stores an event and detects a duplicate."""
    table = WebhookEvent.__table__
    statement = insert_unless_exists(table, "gateway", "event_id").statement
    now = utcnow()
    values = dict(gateway="stripe", event_id="evt_plan", event_type="invoice.paid",
                  gateway_created_at=now, livemode=False, payload=Jsonb({}), source_address=None,
                  status="received", attempts=0, received_at=now, next_attempt_at=now)
    compiled = statement.compile(dialect=db.engine.dialect, column_keys=list(values))
    params = compiled.construct_params(values)
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN " + compiled.string, params).all()
    return "\n".join(row[0] for row in rows)


def _fill(rows: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO webhook_events (gateway, event_id, event_type, livemode, payload, status,"
            " attempts, received_at) SELECT CASE WHEN n % 10 = 0 THEN 'razorpay' ELSE 'stripe' END,"
            " 'evt_' || n, 'invoice.paid', false, '{}', 'processed', 1,"
            " now() - n * interval '1 second' FROM generate_series(1, :rows) AS n"), {"rows": rows})
        conn.execute(sa.text("ANALYZE webhook_events"))


def _uses_only_unique_key(plan: str) -> bool:
    return f"Conflict Arbiter Indexes: {UNIQUE_KEY}" in plan and "gateway_received" not in plan


def test_duplicate_detection_uses_the_unique_key_on_an_empty_table(app, pg_only):
    assert _uses_only_unique_key(_store_plan()), _store_plan()


def test_duplicate_detection_uses_the_unique_key_on_a_large_table(app, pg_only):
    _fill(50_000)
    assert _uses_only_unique_key(_store_plan()), _store_plan()


def test_a_redelivery_is_acknowledged_and_stores_nothing(client, app):
    body = event_body("pipeline.count", n=1)
    first, again = post_webhook(client, body), post_webhook(client, body)
    assert first.status_code == again.status_code == 200
    assert first.json["duplicate"] is False and again.json["duplicate"] is True
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 1
