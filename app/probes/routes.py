"""GET /healthz, /readyz and /metrics: JSON or Prometheus text, no cookie, never throttled."""
from flask import Blueprint, Response, jsonify

from app import metrics
from app.services import health

bp = Blueprint("probes", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive (no I/O)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Database reachable and migrated; Redis and SMTP reported, not required."""
    ready, checks = health.readiness()
    return jsonify(status="ready" if ready else "not_ready", checks=checks), 200 if ready else 503


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus text format, for METRICS_ALLOWED_IPS or the METRICS_TOKEN bearer."""
    health.require_metrics_access()
    return Response(metrics.exposition(), mimetype=metrics.CONTENT_TYPE)
