"""Emails are tried right after the change that queued them commits, on a
background thread; the outbox and `flask notifications send` stay the backstop."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import NotificationOutbox
from app.services import notifications
from tests.conftest import make_app, serve_app, user
from tests.flows import pay
from tests.pipeline.conftest import SmtpSink

DRAIN_SECONDS = 60  # a bound on waiting for the background sender, not a speed claim


@pytest.fixture
def app(_schema, smtp_port):
    yield from serve_app(make_app(MAIL_SEND_PROMPTLY=True, MAIL_SERVER="127.0.0.1",
                                  MAIL_PORT=smtp_port, MAIL_TIMEOUT_SECONDS=5))


@pytest.fixture
def sink(smtp_port):
    server = SmtpSink(smtp_port)
    server.start()
    yield server
    server.stop()


def _outbox() -> list[NotificationOutbox]:
    db.session.expire_all()
    return db.session.scalars(sa.select(NotificationOutbox).order_by(NotificationOutbox.id)).all()


def _drained() -> None:
    assert notifications.prompt_sender.drain(DRAIN_SECONDS), "the background sender never finished"


def test_the_confirmation_is_sent_after_the_payment_commits_without_cron(
        app, client, auth, runner, sink):
    auth.register()

    page = pay(client)
    _drained()

    assert "your payment is confirmed" in page.text
    [mail] = _outbox()
    assert mail.status == "sent" and mail.attempts == 1 and mail.sent_at is not None
    [message] = sink.messages
    assert message["To"] == "asha@example.com" and message["Subject"].startswith("Payment confirmed")
    cron = runner.invoke(args=["notifications", "send"])
    assert cron.exit_code == 0 and "Sent 0" in cron.output
    assert len(sink.messages) == 1


def test_smtp_down_leaves_the_email_queued_and_cron_sends_it_later(
        app, client, auth, runner, smtp_port):
    auth.register()

    page = pay(client)
    _drained()

    assert "your payment is confirmed" in page.text  # the shopper never waits on SMTP
    [mail] = _outbox()
    assert mail.status == "pending" and mail.attempts == 0 and mail.next_attempt_at is None
    assert "ConnectionRefused" in mail.last_error
    server = SmtpSink(smtp_port)
    server.start()
    try:
        cron = runner.invoke(args=["notifications", "send"])
    finally:
        server.stop()
    assert cron.exit_code == 0 and "Sent 1" in cron.output
    assert [m["To"] for m in server.messages] == ["asha@example.com"]
    assert [r.status for r in _outbox()] == ["sent"]


def test_a_rolled_back_change_sends_nothing(app, client, auth, sink):
    auth.register()
    notifications.enqueue(user(), "dispute", "dispute:rolled-back",
                          order=SimpleNamespace(reference="TF-ROLLEDBACK"))
    db.session.rollback()
    _drained()

    assert sink.messages == [] and _outbox() == []


def test_prompt_sender_and_cron_at_once_send_each_email_once(app, client, auth, sink):
    """The after-commit sender and a cron run race for the same rows (real
    threads; on PostgreSQL with SKIP LOCKED claims)."""
    auth.register()
    shopper = user()
    for i in range(20):
        notifications.enqueue(shopper, "dispute", f"dispute:race-{i}",
                              order=SimpleNamespace(reference=f"TF-RACE{i:02d}"))
    committed = threading.Event()
    errors = []

    def cron():
        try:
            with app.app_context():
                committed.wait(DRAIN_SECONDS)
                while notifications.send_pending(limit=3).sent:
                    pass
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)

    cron_thread = threading.Thread(target=cron)
    cron_thread.start()
    db.session.commit()  # starts the prompt sender for all twenty
    committed.set()
    cron_thread.join(DRAIN_SECONDS)
    _drained()
    with app.app_context():
        notifications.send_pending()  # whatever neither took yet

    assert not errors, errors
    subjects = [m["X-Tiffin-Dedupe-Key"] for m in sink.messages]
    assert len(subjects) == 20 and len(set(subjects)) == 20
    assert [r.status for r in _outbox()] == ["sent"] * 20
