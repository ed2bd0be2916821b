"""Pooled connections are checked only after they sat idle.

`pool_pre_ping` would cost a round trip on every checkout, and a webhook checks
a connection out once per transaction (store, fulfil, record the outcome). A
connection used within the last IDLE_PING_SECONDS is handed out as it is; one
idle for longer (a quiet night, a database restart since) is pinged first, and
a dead one is replaced before anyone uses it. A connection that dies while in
use fails its statement once (a webhook answers 503 and is redelivered) and
SQLAlchemy then invalidates every older connection in the pool.
"""
from __future__ import annotations

import time

import sqlalchemy as sa

IDLE_PING_SECONDS = 10
_CHECKED_IN_AT = "tiffin_checked_in_at"


def install_idle_ping(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < IDLE_PING_SECONDS:
            return  # brand new, or in use moments ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"idle connection failed its ping: {exc}") from exc
        if not alive:
            raise sa.exc.DisconnectionError("idle connection failed its ping")
