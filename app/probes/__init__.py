"""Endpoints for machines: /healthz, /readyz (load balancers) and /metrics (Prometheus)."""

PATHS = ("/healthz", "/readyz", "/metrics")
