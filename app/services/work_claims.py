"""Claiming queued work (webhook retries, outbox mail) safely from many hosts.

A row is due when its `next_attempt_at` is empty or past. Claiming pushes
`next_attempt_at` one lease ahead, so no other worker takes the row meanwhile:
candidates are locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL, and the claim
itself is a compare-and-set on `next_attempt_at`, which also holds on SQLite.
"""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models.types import utcnow


def claim_due(model, ready, *, lease: timedelta, limit: int, order_by) -> list[int]:
    """Claim up to `limit` rows of `model` matching `ready` whose time has come; return ids."""
    now = utcnow()
    next_at = model.next_attempt_at
    query = sa.select(model.id, next_at).where(
        ready, sa.or_(next_at.is_(None), next_at <= now)).order_by(*order_by).limit(limit)
    if db.engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = []
    try:
        for row_id, seen_next in db.session.execute(query).all():
            unchanged = next_at.is_(None) if seen_next is None else next_at == seen_next
            result = db.session.execute(
                sa.update(model).where(model.id == row_id, unchanged, ready)
                .values(next_attempt_at=now + lease)
                .execution_options(synchronize_session=False))
            if result.rowcount == 1:
                claimed.append(row_id)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return claimed
