"""Optional live updates for the account page through Redis pub/sub.

When REDIS_URL is set, a change that enqueues a notification (payment
confirmed, renewal, refund …) also publishes `{"kind": …}` on the channel
`tiffin:user:<id>` — but only after the transaction that made the change has
committed, and best effort: any Redis error is swallowed, logged once until
Redis works again, and publishing pauses for COOLDOWN_SECONDS so a dead Redis
host costs a payment nothing. The outbox, not this, is the durable record.
`stream(user_id)` yields Server-Sent Events for an account-page endpoint.
"""
from __future__ import annotations

import json
import logging
import threading
import time

import sqlalchemy as sa
from flask import current_app, has_app_context
from flask_sqlalchemy.session import Session

from app.extensions import db

log = logging.getLogger("tiffin.live_updates")
COOLDOWN_SECONDS = 30
SOCKET_TIMEOUT_SECONDS = 0.5
_PENDING_KEY = "tiffin_live_updates"
_state = {"failing_since": None}
_clients: dict[str, object] = {}
_lock = threading.Lock()


def channel(user_id: int) -> str:
    return f"tiffin:user:{user_id}"


def after_commit(user_id: int, kind: str) -> None:
    """Publish (user_id, kind) once the current transaction commits; nothing on rollback."""
    if not current_app.config.get("REDIS_URL"):
        return
    db.session().info.setdefault(_PENDING_KEY, []).append((user_id, kind))


def _client(url: str):
    import redis

    with _lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(
                url, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS, retry_on_timeout=False)
        return _clients[url]


def publish(user_id: int, kind: str) -> bool:
    """Publish one update now; True if Redis took it. Never raises."""
    url = current_app.config.get("REDIS_URL") if has_app_context() else None
    if not url:
        return False
    failing_since = _state["failing_since"]
    if failing_since is not None and time.monotonic() - failing_since < COOLDOWN_SECONDS:
        return False
    try:
        _client(url).publish(channel(user_id), json.dumps({"kind": kind}))
    except Exception as exc:  # any Redis or socket error: the payment is already safe
        if _state["failing_since"] is None:
            log.warning("live updates unavailable (Redis at REDIS_URL: %s); the account page "
                        "will show changes on reload", type(exc).__name__)
        _state["failing_since"] = time.monotonic()
        return False
    if _state["failing_since"] is not None:
        log.info("live updates working again")
        _state["failing_since"] = None
    return True


@sa.event.listens_for(Session, "after_commit")
def _publish_after_commit(session) -> None:
    for user_id, kind in session.info.pop(_PENDING_KEY, []):
        publish(user_id, kind)


@sa.event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session, _previous_transaction) -> None:
    session.info.pop(_PENDING_KEY, None)


def stream(user_id: int, *, heartbeat_seconds: float = 15.0, max_seconds: float = 20.0):
    """Server-Sent Events for one user's channel (for a streaming account endpoint).

    Yields `data: {...}` lines as updates arrive and a comment line as heartbeat;
    ends quietly when Redis is unavailable (the page then falls back to reload).
    """
    url = current_app.config.get("REDIS_URL")
    if not url:
        return
    try:
        pubsub = _client(url).pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel(user_id))
    except Exception as exc:
        log.warning("live update stream unavailable: %s", type(exc).__name__)
        return
    # A stream holds a server thread, so it ends after max_seconds; the browser's
    # EventSource reconnects after the `retry` delay given here.
    yield "retry: 30000\n\n"
    deadline = time.monotonic() + max_seconds
    try:
        while time.monotonic() < deadline:
            try:
                message = pubsub.get_message(timeout=min(heartbeat_seconds,
                                                         max(deadline - time.monotonic(), 0.01)))
            except Exception:
                return
            if message is None:
                yield ": keep-alive\n\n"
            else:
                data = message["data"]
                yield f"data: {data.decode() if isinstance(data, bytes) else data}\n\n"
    finally:
        try:
            pubsub.close()
        except Exception:
            pass
