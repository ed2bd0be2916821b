"""Audit entries: written in the caller's transaction, never committed here."""
from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry
from app.models.types import utcnow
from app.services.sql import DriverStatement

_INSERT = DriverStatement(sa.insert(AuditLogEntry.__table__))


def entry(actor: str, action: str, entity_type: str, entity_id=None, *, user_id=None,
          order_id=None, **details) -> dict:
    """One audit row's values."""
    return dict(actor=actor, action=action, entity_type=entity_type,
                entity_id=None if entity_id is None else str(entity_id), user_id=user_id,
                order_id=order_id, details=details or None, created_at=utcnow())


def record(actor: str, action: str, entity_type: str, entity_id=None, *, user_id=None,
           order_id=None, **details) -> AuditLogEntry:
    """Add an entry to the session: it is flushed with the objects it refers to."""
    row = AuditLogEntry(**entry(actor, action, entity_type, entity_id, user_id=user_id,
                                order_id=order_id, **details))
    db.session.add(row)
    return row


def record_all(rows: list[dict]) -> None:
    """Write entries built with `entry()` now, in one statement (for Core callers
    whose rows already exist in the database)."""
    _INSERT.executemany(rows)
