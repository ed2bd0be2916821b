"""The notification outbox: emails are written in the same transaction as the
change they announce and sent later by `flask notifications send`."""
from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, render_template

from app.extensions import db
from app.models import NotificationOutbox

KINDS = {
    "payment_confirmed", "renewal", "payment_failed", "action_required", "refund", "dispute",
    "cancellation", "payment_declined",
}


def enqueue(user, kind: str, dedupe_key: str, **context) -> NotificationOutbox | None:
    """Add an email to the outbox (in the caller's transaction) unless one with
    this dedupe key already exists; returns the new row or None."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind}")
    exists = db.session.scalar(sa.select(NotificationOutbox.id).where(
        NotificationOutbox.dedupe_key == dedupe_key))
    if exists is not None:
        return None
    context.setdefault("user", user)
    context.setdefault("support_email", current_app.config["SUPPORT_EMAIL"])
    context.setdefault("base_url", current_app.config["APP_BASE_URL"])
    subject = render_template(f"emails/{kind}.subject.txt", **context).strip()
    body = render_template(f"emails/{kind}.txt", **context)
    row = NotificationOutbox(user_id=user.id, kind=kind, to_email=user.email, subject=subject,
                             body_text=body, dedupe_key=dedupe_key)
    db.session.add(row)
    return row
