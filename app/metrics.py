"""Prometheus metrics (prometheus_client), served at /metrics.

Counters and the latency histogram are counted where things happen (webhook
processing, checkout). Under gunicorn set PROMETHEUS_MULTIPROC_DIR (an empty,
writable directory) before the server starts: each worker then writes its
counts there and a scrape adds them up (gunicorn.conf.py marks dead workers).
Backlogs, dead letters, orders by status and the monitor's findings are read
from the database at scrape time (`app.services.console.metrics_snapshot`),
so every worker reports the same numbers.
"""
from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Histogram, generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

WEBHOOK_DELIVERIES = Counter("tiffin_webhook_deliveries_total",
                             "Webhook processing attempts by gateway and outcome",
                             ["gateway", "outcome"])
WEBHOOK_LATENCY = Histogram("tiffin_webhook_processing_seconds",
                            "Time to process one stored webhook event", ["gateway"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CHECKOUT_STARTS = Counter("tiffin_checkout_starts_total", "Checkouts opened at a gateway",
                          ["gateway"])
CHECKOUT_DECLINES = Counter("tiffin_checkout_declines_total",
                            "Checkout payments declined or failed at the gateway", ["gateway"])
CONTENT_TYPE = CONTENT_TYPE_LATEST


def observe_webhook(gateway: str, outcome: str, seconds: float) -> None:
    WEBHOOK_DELIVERIES.labels(gateway, outcome).inc()
    WEBHOOK_LATENCY.labels(gateway).observe(seconds)


class DatabaseCollector:
    """Gauges read from the database at scrape time."""

    def collect(self):
        from app.services.console import metrics_snapshot

        snap = metrics_snapshot()
        yield _gauge("tiffin_webhook_inbox_backlog", "Stored webhook events not yet processed, "
                     "by status", "status", snap["inbox_backlog"])
        yield _gauge("tiffin_webhook_dead_letters", "Webhook events given up on (dead)", None,
                     snap["dead_letters"])
        yield _gauge("tiffin_outbox_backlog", "Emails not yet sent, by status", "status",
                     snap["outbox_backlog"])
        yield _gauge("tiffin_orders", "Orders by status", "status", snap["orders_by_status"])
        yield _gauge("tiffin_monitor_findings", "Findings of the latest monitor run, by severity",
                     "severity", snap["findings_by_severity"])


def _gauge(name: str, documentation: str, label: str | None, values):
    if label is None:
        return GaugeMetricFamily(name, documentation, value=values)
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def exposition() -> bytes:
    """The text a Prometheus scrape gets: process counters (all workers) and database gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    from_database = CollectorRegistry(auto_describe=False)
    from_database.register(DatabaseCollector())
    return generate_latest(counted) + generate_latest(from_database)
