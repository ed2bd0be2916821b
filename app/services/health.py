"""The one-screen health summary: counts by status, last webhook per gateway, last monitor run."""
from __future__ import annotations

import hmac
import ipaddress
import socket

import sqlalchemy as sa
from flask import current_app

from app.config import BASE_DIR, enabled_gateways
from app.errors import TiffinError
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


# --- readiness and /metrics access ------------------------------------------------

_HEADS: dict[str, tuple[str, ...]] = {}


def migration_heads() -> tuple[str, ...]:
    """The head revision(s) of migrations/ (read once per process)."""
    if "heads" not in _HEADS:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(BASE_DIR / "migrations"))
        _HEADS["heads"] = tuple(sorted(ScriptDirectory.from_config(config).get_heads()))
    return _HEADS["heads"]


def _database_check() -> dict:
    from alembic.runtime.migration import MigrationContext

    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            current = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    except Exception as exc:  # any failure to reach or read the database means not ready
        return {"status": "down", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    expected = migration_heads()
    if current != expected:
        return {"status": "not_migrated", "revision": list(current), "expected": list(expected)}
    return {"status": "up", "revision": list(current)}


def _redis_check() -> dict:
    url = current_app.config.get("REDIS_URL")
    if not url:
        return {"status": "not_configured"}
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except Exception as exc:  # reported, never fatal: the shop works without Redis
        return {"status": "down", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"status": "up"}


def _smtp_check() -> dict:
    cfg = current_app.config
    try:
        socket.create_connection((cfg["MAIL_SERVER"], cfg["MAIL_PORT"]), timeout=0.5).close()
    except OSError as exc:  # reported, never fatal: the outbox keeps mail until SMTP is back
        return {"status": "down", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"status": "up"}


def readiness() -> tuple[bool, dict]:
    """(ready, checks): ready when the database answers at the latest migration."""
    checks = {"database": _database_check(), "redis": _redis_check(), "smtp": _smtp_check()}
    return checks["database"]["status"] == "up", checks


def metrics_allowed(address: str, authorization: str) -> bool:
    """From METRICS_ALLOWED_IPS (addresses or networks, comma-separated), or with the
    bearer token METRICS_TOKEN. Neither set: nobody."""
    cfg = current_app.config
    token = cfg.get("METRICS_TOKEN") or ""
    scheme, _, given = (authorization or "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in allowed_metrics_networks(cfg.get("METRICS_ALLOWED_IPS")))


def allowed_metrics_networks(setting: str | None) -> list:
    """Parse METRICS_ALLOWED_IPS; ValueError names a bad entry."""
    return [ipaddress.ip_network(part.strip(), strict=False)
            for part in (setting or "").split(",") if part.strip()]


def require_metrics_access() -> None:
    """Raise METRICS_FORBIDDEN unless this request may read /metrics."""
    from flask import request

    if not metrics_allowed(request.remote_addr or "", request.headers.get("Authorization", "")):
        raise TiffinError("METRICS_FORBIDDEN", f"/metrics from {request.remote_addr}")
