"""The webhook baseline: a minimal WSGI endpoint that only checks the HMAC of the
body and inserts one row, on the same gunicorn settings and database as Tiffin.

    gunicorn bench.baseline_app:app   (DATABASE_URL, TEST_GATEWAY_WEBHOOK_SECRET)

POST any path: 400 on a bad signature, else INSERT ... ON CONFLICT DO NOTHING and
200. GET: 200 (readiness). The table is `bench_baseline_events` (create_table()).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading

import psycopg

SIGNATURE_HEADER = "HTTP_X_TEST_GATEWAY_SIGNATURE"
TABLE_SQL = """CREATE TABLE IF NOT EXISTS bench_baseline_events (
    id bigserial PRIMARY KEY, event_id varchar(255) NOT NULL UNIQUE, payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now())"""
INSERT_SQL = ("INSERT INTO bench_baseline_events (event_id, payload) VALUES (%s, %s) "
              "ON CONFLICT (event_id) DO NOTHING")
_local = threading.local()


def conninfo(database_url: str) -> str:
    """A libpq URL from a SQLAlchemy one (postgresql+psycopg://… → postgresql://…)."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def create_table(database_url: str) -> None:
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        conn.execute(TABLE_SQL)
        conn.execute("TRUNCATE bench_baseline_events")


def _connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:  # one per worker thread, opened after the fork
        conn = _local.conn = psycopg.connect(conninfo(os.environ["DATABASE_URL"]))
    return conn


def _secret() -> bytes:
    return os.environ["TEST_GATEWAY_WEBHOOK_SECRET"].split(",")[0].strip().encode()


def app(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    expected = hmac.new(_secret(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, environ.get(SIGNATURE_HEADER, "")):
        start_response("400 Bad Request", [("Content-Type", "application/json")])
        return [b'{"error":"PAYMENT_SIGNATURE_INVALID"}']
    event_id = json.loads(body)["id"]
    conn = _connection()
    conn.execute(INSERT_SQL, (event_id, body.decode()))
    conn.commit()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"received":true}']
