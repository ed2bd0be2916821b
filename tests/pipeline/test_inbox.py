"""The webhook inbox against real failures: a handler that raises, a process
killed between store and process, the database gone when a webhook arrives,
and two retry workers at once."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Order, Subscription, WebhookDeliveryAttempt, WebhookEvent
from app.models.types import utcnow
from app.webhooks.handlers import HANDLERS
from app.webhooks.handlers import test as test_handlers
from tests.conftest import count, database_url, make_app, user
from tests.pipeline.conftest import event_body, paid_event, pending_order, post_webhook

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _event(event_id=None) -> WebhookEvent:
    query = sa.select(WebhookEvent).order_by(WebhookEvent.id)
    if event_id:
        query = query.where(WebhookEvent.event_id == event_id)
    db.session.expire_all()
    return db.session.scalars(query).one()


def _make_due(event: WebhookEvent) -> None:
    """Let the backoff elapse (stands in for the wall clock moving on)."""
    event.next_attempt_at = utcnow()
    db.session.commit()


def _assert_paid_once():
    db.session.expire_all()
    assert count(Order, Order.status == "paid") == 1
    assert count(Subscription) == 1
    assert user().meal_credits == 20


def test_handler_that_raises_is_stored_failed_answered_2xx_and_retried(client, auth, runner,
                                                                        monkeypatch):
    auth.register()
    order = pending_order(client)
    calls = []

    def flaky(event):
        calls.append(event.event_id)
        if len(calls) == 1:
            raise RuntimeError("downstream exploded")
        return test_handlers.payment_succeeded(event)

    monkeypatch.setitem(HANDLERS["test"], "payment.succeeded", flaky)

    reply = post_webhook(client, paid_event(order))

    assert reply.status_code == 200 and reply.json["status"] == "failed"
    event = _event()
    assert event.status == "failed" and event.attempts == 1
    assert "downstream exploded" in event.last_error
    assert event.next_attempt_at > utcnow()
    attempt = db.session.scalars(sa.select(WebhookDeliveryAttempt)).one()
    assert (attempt.outcome, attempt.trigger) == ("failed", "delivery")
    assert "RuntimeError" in attempt.error and attempt.source_address == "127.0.0.1"
    assert count(Order, Order.status == "paid") == 0

    listed = runner.invoke(args=["webhooks", "list", "--status", "failed"])
    assert listed.exit_code == 0 and event.event_id in listed.output
    assert "downstream exploded" in listed.output

    early = runner.invoke(args=["webhooks", "retry"])  # backoff not elapsed: nothing to do
    assert early.exit_code == 0 and "No webhook events due" in early.output
    assert len(calls) == 1

    _make_due(event)
    retried = runner.invoke(args=["webhooks", "retry"])

    assert retried.exit_code == 0, retried.output
    assert "1 processed" in retried.output
    event = _event()
    assert event.status == "processed" and event.attempts == 2 and event.last_error is None
    triggers = db.session.scalars(sa.select(WebhookDeliveryAttempt.trigger)
                                  .order_by(WebhookDeliveryAttempt.id)).all()
    assert triggers == ["delivery", "retry"]
    _assert_paid_once()
    assert runner.invoke(args=["webhooks", "list", "--status", "failed"]).output.startswith(
        "No failed webhook events")


def test_dead_letter_after_the_attempt_limit_then_replay(app, client, runner, monkeypatch):
    app.config["WEBHOOK_MAX_ATTEMPTS"] = 2
    broken = {"on": True}

    def handler(event):
        if broken["on"]:
            raise ValueError("bad data in event")
        return "processed"

    monkeypatch.setitem(HANDLERS["test"], "pipeline.check", handler)
    body = event_body("pipeline.check", n=1)
    assert post_webhook(client, body).status_code == 200
    _make_due(_event())

    retried = runner.invoke(args=["webhooks", "retry"])

    assert retried.exit_code == 1 and "1 dead" in retried.output
    event = _event()
    assert event.status == "dead" and event.next_attempt_at is None and event.attempts == 2
    assert runner.invoke(args=["webhooks", "retry"]).output.startswith("No webhook events due")
    dead = runner.invoke(args=["webhooks", "list", "--status", "dead"])
    assert event.event_id in dead.output

    again = runner.invoke(args=["webhooks", "replay", event.event_id])
    assert again.exit_code == 1 and _event().status == "failed"

    broken["on"] = False
    fixed = runner.invoke(args=["webhooks", "replay", str(event.id)])  # by our id too
    assert fixed.exit_code == 0 and "processed" in fixed.output
    assert _event().status == "processed"
    assert db.session.scalars(sa.select(WebhookDeliveryAttempt.trigger)
                              .order_by(WebhookDeliveryAttempt.id)).all() == \
        ["delivery", "retry", "replay", "replay"]
    missing = runner.invoke(args=["webhooks", "replay", "tge_nope"])
    assert missing.exit_code == 2


def _store_then_die(body: bytes, stuck_after: int) -> int:
    """In a separate process: deliver the webhook through the real route, which
    stores the event, and die (os._exit) before any handler runs."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        from tests.conftest import make_app
        import app.webhooks.routes as routes
        from app.gateways import get_gateway
        app = make_app(WEBHOOK_STUCK_AFTER_SECONDS={stuck_after})
        routes.process_event = lambda *a, **k: os._exit(17)
        body = sys.stdin.buffer.read()
        with app.app_context():
            sig = get_gateway("test").sign_body(body)
        app.test_client().post("/webhooks/test", data=body, headers={{
            "X-Test-Gateway-Signature": sig, "Content-Type": "application/json"}},
            environ_base={{"REMOTE_ADDR": "127.0.0.1"}})
        sys.exit(0)  # not reached
    """)
    proc = subprocess.run([sys.executable, "-c", script], input=body, cwd=ROOT,
                          env={**os.environ, "DATABASE_URL": database_url()},
                          capture_output=True, timeout=120)
    return proc.returncode


def test_process_killed_between_store_and_process_is_finished_by_retry(client, auth, runner):
    auth.register()
    order = pending_order(client)
    db.session.commit()

    assert _store_then_die(paid_event(order), stuck_after=0) == 17

    event = _event()
    assert event.status == "received" and event.attempts == 0
    assert count(WebhookDeliveryAttempt) == 0 and count(Order, Order.status == "paid") == 0

    retried = runner.invoke(args=["webhooks", "retry"])

    assert retried.exit_code == 0 and "1 processed" in retried.output
    assert _event().status == "processed"
    _assert_paid_once()
    assert runner.invoke(args=["webhooks", "retry"]).output.startswith("No webhook events due")


def test_a_just_stored_event_is_left_to_its_delivery_until_the_threshold(client, auth, runner):
    auth.register()
    order = pending_order(client)
    db.session.commit()

    assert _store_then_die(paid_event(order), stuck_after=120) == 17

    # Still inside the stuck threshold: the delivering process may be working on it.
    assert runner.invoke(args=["webhooks", "retry"]).output.startswith("No webhook events due")
    assert _event().status == "received"


def test_database_down_when_webhook_arrives_is_5xx_and_redelivery_processed_once(
        client, auth, pg_proxy):
    auth.register()
    order = pending_order(client)
    body = paid_event(order)
    db.session.commit()
    proxied = make_app(SQLALCHEMY_DATABASE_URI=pg_proxy.url())
    hook_client = proxied.test_client()
    # A pooled connection exists through the proxy before the database goes away.
    assert post_webhook(hook_client, event_body("pipeline.warmup")).status_code == 200

    pg_proxy.close()
    down = post_webhook(hook_client, body)

    assert down.status_code == 503 and down.json["error"] == "WEBHOOK_STORE_FAILED"
    assert count(WebhookEvent, WebhookEvent.event_type == "payment.succeeded") == 0

    pg_proxy.open()
    redelivered = post_webhook(hook_client, body)
    duplicate = post_webhook(hook_client, body)

    assert redelivered.status_code == 200 and redelivered.json["status"] == "processed"
    assert duplicate.status_code == 200 and duplicate.json["duplicate"] is True
    event = _event(redelivered_event_id(body))
    assert event.attempts == 1 and event.delivery_attempts.count() == 1
    _assert_paid_once()
    with proxied.app_context():
        db.engine.dispose()


def redelivered_event_id(body: bytes) -> str:
    import json
    return json.loads(body)["id"]


def test_two_retry_workers_at_once_process_each_event_once(app, client, pg_only, monkeypatch):
    calls: list[str] = []
    calls_lock = threading.Lock()

    def counting(event):
        with calls_lock:
            calls.append(event.event_id)
        return "processed"

    def broken(event):
        raise RuntimeError("not yet")

    monkeypatch.setitem(HANDLERS["test"], "pipeline.count", broken)
    for n in range(30):
        assert post_webhook(client, event_body("pipeline.count", n=n)).json["status"] == "failed"
    db.session.execute(sa.update(WebhookEvent).values(next_attempt_at=utcnow()))
    db.session.commit()
    monkeypatch.setitem(HANDLERS["test"], "pipeline.count", counting)

    from app.services.webhook_inbox import retry_due

    start = threading.Barrier(2)
    done: list[dict] = []
    errors: list[BaseException] = []

    def worker():
        try:
            with app.app_context():
                start.wait()
                total: dict = {}
                while counts := retry_due(limit=4):
                    for k, v in counts.items():
                        total[k] = total.get(k, 0) + v
                done.append(total)
                db.session.remove()
        except BaseException as exc:  # surface in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not errors, errors
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 30
    assert sum(d.get("processed", 0) for d in done) == 30
    db.session.expire_all()
    assert count(WebhookEvent, WebhookEvent.status == "processed") == 30
    per_event = db.session.execute(
        sa.select(WebhookDeliveryAttempt.webhook_event_id, sa.func.count())
        .where(WebhookDeliveryAttempt.trigger == "retry")
        .group_by(WebhookDeliveryAttempt.webhook_event_id)).all()
    assert len(per_event) == 30 and {n for _, n in per_event} == {1}


@pytest.mark.parametrize("setting", ["test", "test=not-an-ip", "test=10.0.0.0/8;=1.2.3.4"])
def test_malformed_allow_list_refuses_to_start(setting):
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="WEBHOOK_ALLOWED_IPS"):
        make_app(WEBHOOK_ALLOWED_IPS=setting)
