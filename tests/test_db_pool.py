"""Pooled connections are pinged only after they sat idle (app/db_pool.py).

Proved on PostgreSQL by killing the server side of a pooled connection, as a
database restart or an idle timeout on a proxy would.
"""
from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from app import db_pool
from app.extensions import db
from tests.conftest import database_url


def _backend_pid() -> int:
    pid = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    db.session.commit()  # the connection goes back to the pool
    return pid


def _kill(pid: int) -> None:
    with psycopg.connect(database_url().replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def test_a_connection_that_died_while_idle_is_replaced_before_use(app, pg_only, monkeypatch):
    monkeypatch.setattr(db_pool, "IDLE_PING_SECONDS", 0)  # every connection counts as idle
    pid = _backend_pid()
    _kill(pid)

    assert _backend_pid() != pid  # pinged, found dead, replaced: the caller never noticed


def test_a_connection_used_moments_ago_is_not_pinged(app, pg_only):
    # The other side of the trade: a recently used connection is handed out unchecked,
    # so one that died in that window fails once, and the pool then replaces it.
    pid = _backend_pid()
    _kill(pid)

    with pytest.raises(OperationalError):
        db.session.execute(sa.text("SELECT 1"))
    db.session.rollback()
    assert _backend_pid() != pid
