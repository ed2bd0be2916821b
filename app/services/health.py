"""The one-screen health summary: counts by status, last webhook per gateway, last monitor run."""
from __future__ import annotations

import sqlalchemy as sa
from flask import current_app

from app.config import enabled_gateways
from app.extensions import db
from app.models import MonitorRun, NotificationOutbox, Order, Subscription, User, WebhookEvent
from app.gateways import GATEWAY_CLASSES


def _by_status(model) -> dict[str, int]:
    rows = db.session.execute(sa.select(model.status, sa.func.count()).group_by(model.status)).all()
    return {status: n for status, n in sorted(rows)}


def summary() -> dict:
    """Everything an operator wants at a glance, as plain data (one GROUP BY per table)."""
    gateways = enabled_gateways(current_app.config)
    last_webhook = dict(db.session.execute(
        sa.select(WebhookEvent.gateway, sa.func.max(WebhookEvent.received_at))
        .group_by(WebhookEvent.gateway)).all())
    run = db.session.scalars(sa.select(MonitorRun).order_by(MonitorRun.started_at.desc())
                             .limit(1)).first()
    data = {
        "gateways": [{"name": name, "implemented": name in GATEWAY_CLASSES,
                      "last_webhook_at": last_webhook[name].isoformat()
                      if last_webhook.get(name) else None} for name in gateways],
        "orders": _by_status(Order),
        "subscriptions": _by_status(Subscription),
        "webhook_events": _by_status(WebhookEvent),
        "notifications": _by_status(NotificationOutbox),
        "users": db.session.scalar(sa.select(sa.func.count()).select_from(User)),
        "last_monitor_run": None if run is None else {
            "started_at": run.started_at.isoformat(), "exit_code": run.exit_code,
            "counts": (run.summary or {}).get("counts")},
    }
    db.session.rollback()
    return data
