"""Redis is optional: a real redis-server backs the rate limiter and live updates,
is killed mid-test, and purchases still complete."""
from __future__ import annotations

import json
import logging

import pytest
import redis
import sqlalchemy as sa

from app.extensions import db
from app.models import NotificationOutbox, Order, Subscription
from app.services import live_updates, notifications
from tests.conftest import AuthActions, count, make_app, user
from tests.flows import pay


@pytest.fixture(autouse=True)
def _fresh_live_update_state():
    live_updates._state["failing_since"] = None
    live_updates._clients.clear()
    yield
    live_updates._state["failing_since"] = None
    live_updates._clients.clear()


def _next_message(pubsub):
    """The next published message (subscribe confirmations are ignored)."""
    for _ in range(50):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            return json.loads(message["data"])
    return None


def test_redis_killed_mid_test_purchase_still_completes(app, redis_server, caplog):
    shop = make_app(REDIS_URL=redis_server.url, RATELIMIT_STORAGE_URI=redis_server.url)
    watcher = redis.Redis.from_url(redis_server.url)
    first, second = shop.test_client(), shop.test_client()
    AuthActions(first).register()
    pubsub = watcher.pubsub()
    pubsub.subscribe(live_updates.channel(user().id))

    assert "your payment is confirmed" in pay(first).text
    assert _next_message(pubsub) == {"kind": "payment_confirmed"}
    assert any(b"LIMIT" in key.upper() for key in watcher.keys("*"))  # the limiter used Redis
    pubsub.close()
    watcher.close()

    redis_server.kill()
    AuthActions(second).register(email="ravi@example.com", name="Ravi")
    with caplog.at_level(logging.WARNING, logger="tiffin.live_updates"):
        page = pay(second)
        AuthActions(second).logout()
        AuthActions(second).register(email="meera@example.com", name="Meera")
        later = pay(second)

    assert "your payment is confirmed" in page.text and "your payment is confirmed" in later.text
    assert count(Order, Order.status == "paid") == 3 and count(Subscription) == 3
    assert user("ravi@example.com").meal_credits == 20
    assert count(NotificationOutbox, NotificationOutbox.kind == "payment_confirmed") == 3
    warnings = [r for r in caplog.records if "live updates unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per purchase


def test_live_update_is_published_only_after_commit(app, client, auth, redis_server):
    app.config["REDIS_URL"] = redis_server.url
    auth.register()
    watcher = redis.Redis.from_url(redis_server.url)
    pubsub = watcher.pubsub()
    pubsub.subscribe(live_updates.channel(user().id))
    pay(client)
    assert _next_message(pubsub) == {"kind": "payment_confirmed"}
    order = db.session.scalars(sa.select(Order)).one()

    notifications.enqueue(user(), "refund", "pipeline-refund:1", order=order)
    db.session.rollback()
    notifications.enqueue(user(), "dispute", "pipeline-dispute:1", order=order)
    assert pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1) is None  # not yet
    db.session.commit()

    # Publishing is synchronous at commit, so a published refund would arrive first.
    assert _next_message(pubsub) == {"kind": "dispute"}
    pubsub.close()
    watcher.close()


def test_stream_relays_published_updates_and_ends_when_redis_goes(app, redis_server):
    app.config["REDIS_URL"] = redis_server.url
    events = live_updates.stream(7, heartbeat_seconds=0.2)

    assert next(events) == "retry: 30000\n\n"  # the browser reconnects after 30 s
    assert next(events) == ": keep-alive\n\n"  # subscribed, nothing published yet
    assert live_updates.publish(7, "renewal") is True
    assert next(events) == 'data: {"kind": "renewal"}\n\n'

    redis_server.kill()
    assert list(events) == []  # the stream ends; the page falls back to reload
    assert live_updates.publish(7, "renewal") is False
    app.config["REDIS_URL"] = ""
    assert list(live_updates.stream(7)) == []


def test_stream_ends_after_its_time_limit_so_it_never_holds_a_thread_for_long(app, redis_server):
    app.config["REDIS_URL"] = redis_server.url
    events = list(live_updates.stream(7, heartbeat_seconds=0.1, max_seconds=0.5))
    assert events[0] == "retry: 30000\n\n" and events[-1] == ": keep-alive\n\n"
    assert 2 <= len(events) <= 8


def test_account_page_offers_live_updates_only_with_redis(app, client, auth, redis_server):
    auth.register()
    page = client.get("/account/")
    assert "data-live-updates-url" not in page.text and "live-updates.js" not in page.text
    assert client.get("/account/updates").status_code == 204
    app.config["REDIS_URL"] = redis_server.url
    page = client.get("/account/")
    assert 'data-live-updates-url="/account/updates"' in page.text and "live-updates.js" in page.text
    stream = client.get("/account/updates", buffered=False)
    assert stream.mimetype == "text/event-stream"
    assert next(stream.response) == b"retry: 30000\n\n"
    stream.close()
