"""Audit entries: added to the caller's transaction, never committed here."""
from __future__ import annotations

from app.extensions import db
from app.models import AuditLogEntry


def record(actor: str, action: str, entity_type: str, entity_id=None, *, user_id=None,
           order_id=None, **details) -> AuditLogEntry:
    entry = AuditLogEntry(actor=actor, action=action, entity_type=entity_type,
                          entity_id=None if entity_id is None else str(entity_id),
                          user_id=user_id, order_id=order_id, details=details or None)
    db.session.add(entry)
    return entry
