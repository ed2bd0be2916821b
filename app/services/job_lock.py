"""A named lease so two overlapping cron runs of one job never both act.

A lock is a row in `job_locks` (name is the primary key): inserting it is the
acquire, deleting it the release. It works the same on PostgreSQL and SQLite,
and a run that died without releasing blocks others only until `expires_at`.
Lock rows are written on their own connection, outside the caller's session
transaction, so a job may commit or roll back freely while it holds the lock.
"""
from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from app.extensions import db
from app.models import JobLock
from app.models.types import utcnow

DEFAULT_TTL_SECONDS = 2 * 3600


class JobLocked(RuntimeError):
    """Another run holds the lock; the caller should do nothing and say so."""

    def __init__(self, name: str, holder: str | None):
        super().__init__(f"job {name!r} is already running (held by {holder or 'unknown'})")
        self.name = name
        self.holder = holder


def _table():
    return JobLock.__table__


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(name: str, holder: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> bool:
    """Take the lease if nobody holds a live one. Returns False when taken."""
    table, now = _table(), utcnow()
    try:
        with db.engine.begin() as conn:
            conn.execute(table.delete().where(table.c.name == name, table.c.expires_at < now))
        with db.engine.begin() as conn:
            conn.execute(table.insert().values(name=name, holder=holder, acquired_at=now,
                                               expires_at=now + timedelta(seconds=ttl_seconds)))
        return True
    except IntegrityError:
        return False  # a concurrent run inserted first (PostgreSQL waits, then refuses)
    except OperationalError as exc:
        if db.engine.dialect.name == "sqlite" and "locked" in str(exc):
            return False  # SQLite: another writer is busy taking it
        raise


def current_holder(name: str) -> str | None:
    table = _table()
    with db.engine.connect() as conn:
        return conn.execute(sa.select(table.c.holder).where(table.c.name == name)).scalar()


def release(name: str, holder: str) -> None:
    table = _table()
    with db.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.name == name, table.c.holder == holder))


@contextmanager
def job_lock(name: str, ttl_seconds: int = DEFAULT_TTL_SECONDS):
    """Hold the named lease for the `with` block, or raise JobLocked at once."""
    holder = new_holder()
    if not acquire(name, holder, ttl_seconds):
        raise JobLocked(name, current_holder(name))
    try:
        yield holder
    finally:
        release(name, holder)
