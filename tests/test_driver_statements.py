"""DriverStatement (app/services/sql.py): the hot path's statements run on the
psycopg cursor on PostgreSQL and through SQLAlchemy elsewhere. Either way a row is
written as SQLAlchemy would write it and errors arrive as SQLAlchemy's own."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from app.extensions import db
from app.models import AuditLogEntry, Order, User
from app.services.sql import DriverStatement, insert_unless_exists
from tests.conftest import database_url, is_postgres, plan

USERS = User.__table__
ORDERS = Order.__table__
_INSERT_USER = DriverStatement(sa.insert(USERS).returning(USERS.c.id))
_MARK = DriverStatement(sa.update(ORDERS).where(ORDERS.c.id == sa.bindparam("p_order_id")))
_FIND_USER = DriverStatement(sa.select(USERS.c.id, USERS.c.email).where(
    USERS.c.email == sa.bindparam("email")))


def _new_user(email: str = "drv@example.com") -> int:
    return _INSERT_USER.execute(dict(email=email, name="Drv", password_hash="x")).scalar_one()


def test_defaults_json_and_timestamps_are_written_as_the_orm_writes_them(app):
    user_id = _new_user()
    order = Order(user_id=user_id, meal_plan_id=plan("lunch-monthly").id, gateway="test",
                  gateway_order_id="tgo_drv", amount_minor=100, currency="INR")
    db.session.add(order)
    db.session.commit()
    created_at = order.updated_at
    paid_at = datetime(2026, 5, 4, 3, 2, 1, tzinfo=timezone.utc)

    _MARK.execute({"p_order_id": order.id, "status": "paid", "paid_at": paid_at,
                   "gateway_data": {"note": "ünïcode", "n": [1, 2]}})
    entry = dict(actor="test", action="drv", entity_type="order", entity_id=str(order.id),
                 user_id=user_id, order_id=order.id, details={"k": "v"},
                 created_at=paid_at + timedelta(hours=1))
    DriverStatement(sa.insert(AuditLogEntry.__table__)).executemany([entry, entry])
    db.session.commit()

    fresh = db.session.get(User, user_id, populate_existing=True)
    assert fresh.plan_meal_credits == 0 and fresh.subscription_status == "none"  # column defaults
    assert fresh.created_at is not None and fresh.created_at.tzinfo is not None
    order = db.session.get(Order, order.id, populate_existing=True)
    assert order.status == "paid" and order.paid_at == paid_at
    assert order.gateway_data == {"note": "ünïcode", "n": [1, 2]}
    assert order.updated_at > created_at  # onupdate ran
    rows = db.session.scalars(sa.select(AuditLogEntry).where(AuditLogEntry.action == "drv")).all()
    expected = ({"k": "v"}, paid_at + timedelta(hours=1))
    assert [(r.details, r.created_at) for r in rows] == [expected, expected]


def test_rows_read_back_by_name(app):
    user_id = _new_user("reader@example.com")
    row = _FIND_USER.execute({"email": "reader@example.com"}).one()
    assert (row.id, row.email) == (user_id, "reader@example.com")
    assert _FIND_USER.execute({"email": "nobody@example.com"}).first() is None
    with pytest.raises(sa.exc.NoResultFound):
        _FIND_USER.execute({"email": "nobody@example.com"}).one()


def test_insert_unless_exists_skips_a_taken_key(app):
    user_id = _new_user()
    entry = dict(user_id=user_id, bucket="plan", delta=5, balance_after=5, reason="drv",
                 source_key="drv:1", created_at=datetime.now(timezone.utc))
    ledger = insert_unless_exists(db.metadata.tables["credit_ledger"], "source_key")
    assert ledger.execute(entry).scalar() is not None
    assert ledger.execute(entry).scalar() is None  # skipped, not an error
    db.session.commit()


def test_a_unique_violation_is_sqlalchemys_integrity_error(app):
    _new_user("twice@example.com")
    db.session.commit()
    with pytest.raises(IntegrityError):
        _new_user("twice@example.com")
    db.session.rollback()
    assert _FIND_USER.execute({"email": "twice@example.com"}).one()  # the session works on


def test_cursor_events_see_driver_statements(app):
    seen = []

    def remember(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", remember)
    try:
        _FIND_USER.execute({"email": "x@example.com"})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", remember)
    assert len(seen) == 1 and "FROM users" in seen[0]


def test_an_in_list_is_refused_on_the_driver(app, pg_only):
    statement = DriverStatement(sa.select(USERS.c.id).where(USERS.c.email.in_(["a", "b"])))
    with pytest.raises(ValueError, match="IN with a list"):
        statement.execute()


def test_a_connection_that_died_fails_once_and_is_replaced(app, pg_only):
    """A dead connection met on the driver is invalidated like any other."""
    pid_query = DriverStatement(sa.select(sa.func.pg_backend_pid().label("pid")))
    pid = pid_query.execute().scalar_one()
    db.session.commit()
    with psycopg.connect(database_url().replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]

    with pytest.raises(OperationalError):
        pid_query.execute()
    db.session.rollback()
    assert pid_query.execute().scalar_one() != pid


def test_sqlite_runs_the_statement_through_sqlalchemy(app):
    result = _FIND_USER.execute({"email": "none@example.com"})
    assert isinstance(result, sa.CursorResult) != is_postgres()


def test_pending_orm_changes_are_flushed_first(app):
    """As session.execute would: a statement sees the session's pending rows."""
    db.session.add(User(email="pending@example.com", name="P", password_hash="x"))
    row = _FIND_USER.execute({"email": "pending@example.com"}).first()
    assert row is not None and row.email == "pending@example.com"
