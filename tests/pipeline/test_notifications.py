"""The notification outbox with the mail server down, then up (a real aiosmtpd sink)."""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

import sqlalchemy as sa
import time_machine

from app.extensions import db
from app.models import NotificationOutbox, Order, Subscription
from app.models.types import utcnow
from app.services import notifications
from tests.conftest import count, user
from tests.flows import pay
from tests.pipeline.conftest import SmtpSink


def _outbox() -> list[NotificationOutbox]:
    db.session.expire_all()
    return db.session.scalars(sa.select(NotificationOutbox).order_by(NotificationOutbox.id)).all()


def _extra_rows(n: int) -> None:
    for i in range(n):
        db.session.add(NotificationOutbox(
            user_id=user().id, kind="refund", to_email=f"r{i}@example.com", subject=f"Refund {i}",
            body_text="Refunded.", dedupe_key=f"pipeline-extra:{i}"))
    db.session.commit()


def test_smtp_unreachable_purchase_completes_and_a_later_send_delivers(
        app, client, auth, runner, smtp_port, caplog):
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_port, MAIL_TIMEOUT_SECONDS=2)
    auth.register()

    page = pay(client)

    assert "your payment is confirmed" in page.text
    assert count(Order, Order.status == "paid") == 1 and count(Subscription) == 1
    [mail] = _outbox()
    assert mail.kind == "payment_confirmed" and mail.status == "pending"
    _extra_rows(2)

    with caplog.at_level(logging.WARNING, logger="tiffin.notifications"):
        down = runner.invoke(args=["notifications", "send"])

    assert down.exit_code == 1 and "retrying later 3" in down.output
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1  # once for the run, not once per email
    rows = _outbox()
    assert [r.status for r in rows] == ["pending"] * 3
    assert all(r.attempts == 1 and "ConnectionRefused" in r.last_error for r in rows)
    assert all(r.next_attempt_at > utcnow() for r in rows)

    sink = SmtpSink(smtp_port)
    sink.start()
    try:
        nothing_due = runner.invoke(args=["notifications", "send"])
        assert nothing_due.exit_code == 0 and "Sent 0" in nothing_due.output
        with time_machine.travel(utcnow() + timedelta(minutes=5), tick=True):
            up = runner.invoke(args=["notifications", "send"])
            assert up.exit_code == 0 and "Sent 3" in up.output, up.output
            again = runner.invoke(args=["notifications", "send"])
            assert "Sent 0" in again.output
    finally:
        sink.stop()

    assert len(sink.messages) == 3
    confirmation = next(m for m in sink.messages if m["To"] == "asha@example.com")
    assert confirmation["Subject"].startswith("Payment confirmed")
    assert confirmation["X-Tiffin-Dedupe-Key"] == mail.dedupe_key
    assert confirmation["Message-ID"] == f"<outbox-{mail.id}@shop.test>"
    assert "meal credits" in confirmation.get_payload()
    assert [r.status for r in _outbox()] == ["sent"] * 3


def test_gives_up_after_the_attempt_limit(app, client, auth, runner, smtp_port):
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_port, NOTIFICATION_MAX_ATTEMPTS=2)
    auth.register()
    pay(client)

    runner.invoke(args=["notifications", "send"])
    with time_machine.travel(utcnow() + timedelta(hours=1), tick=True):
        last = runner.invoke(args=["notifications", "send"])

    assert last.exit_code == 1 and "given up 1" in last.output
    [mail] = _outbox()
    assert mail.status == "failed" and mail.attempts == 2 and mail.next_attempt_at is None


def test_a_refused_recipient_is_retried_alone_and_the_rest_are_sent(
        app, client, auth, runner, smtp_port):
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_port)
    auth.register()
    pay(client)
    _extra_rows(2)
    sink = SmtpSink(smtp_port)
    sink.refuse.add("r0@example.com")
    sink.start()
    try:
        result = runner.invoke(args=["notifications", "send"])
    finally:
        sink.stop()

    assert result.exit_code == 1 and "Sent 2, retrying later 1" in result.output
    assert sorted(m["To"] for m in sink.messages) == ["asha@example.com", "r1@example.com"]
    refused = next(r for r in _outbox() if r.to_email == "r0@example.com")
    assert refused.status == "pending" and "SMTPRecipientsRefused" in refused.last_error


def test_one_event_never_emails_twice(app, client, auth):
    auth.register()
    pay(client)
    order = db.session.scalars(sa.select(Order)).one()

    again = notifications.enqueue(user(), "payment_confirmed", f"payment_confirmed:{order.id}",
                                  order=order, plan=order.meal_plan)

    assert again is False and len(_outbox()) == 1


def test_two_senders_at_once_send_each_email_once(app, client, auth, smtp_port, pg_only):
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_port)
    auth.register()
    pay(client)
    _extra_rows(20)
    sink = SmtpSink(smtp_port)
    sink.start()
    start = threading.Barrier(2)
    errors = []

    def sender():
        try:
            with app.app_context():
                start.wait()
                while notifications.send_pending(limit=3).sent:
                    pass
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sink.stop()

    assert not errors, errors
    recipients = sorted(m["To"] for m in sink.messages)
    assert len(recipients) == 21 and len(set(recipients)) == 21
    assert [r.status for r in _outbox()] == ["sent"] * 21
