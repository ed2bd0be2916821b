"""Helpers for the operations tests: a healthy shop, and one planter per kind of problem."""
from __future__ import annotations

import json
import secrets
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import (MealPlan, NotificationOutbox, Order, Subscription, User, WebhookEvent,
                        utcnow)
from app.services.fulfilment import _create_subscription_and_order

LIVE_INDEX = ("CREATE UNIQUE INDEX uq_subscriptions_one_live_per_user ON subscriptions (user_id) "
              "WHERE status IN ('active', 'trialing', 'past_due')")


def make_user(email: str) -> User:
    person = User(email=email, name=email.split("@")[0], password_hash="x")
    db.session.add(person)
    db.session.commit()
    return person


def plan_by_slug(slug: str) -> MealPlan:
    return db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == slug)).one()


def pending_order(person: User, slug: str = "lunch-monthly", **values) -> Order:
    chosen = plan_by_slug(slug)
    order = Order(user_id=person.id, meal_plan_id=chosen.id, gateway="test",
                  gateway_order_id="tgo_" + secrets.token_hex(6), amount_minor=chosen.price_minor,
                  currency=chosen.currency,
                  kind="subscription" if chosen.is_recurring else "addon", **values)
    db.session.add(order)
    db.session.commit()
    return order


def pay(person: User, slug: str = "lunch-monthly") -> Order:
    """A paid, fulfilled order (paid an hour ago, so past the monitor's grace period)."""
    order = pending_order(person, slug)
    _create_subscription_and_order(person, order.meal_plan, "test", order.gateway_order_id,
                                   "tgp_" + secrets.token_hex(6), order.amount_minor, order.currency,
                                   actor="test", metadata_user_id=person.id)
    hour_ago = utcnow() - timedelta(hours=1)
    db.session.execute(sa.update(Order).where(Order.id == order.id)
                       .values(paid_at=hour_ago, created_at=hour_ago))
    db.session.commit()
    return db.session.get(Order, order.id)


def webhook_event(gateway: str = "test", status: str = "processed", received_ago=timedelta(0),
                  **values) -> WebhookEvent:
    event = WebhookEvent(gateway=gateway, event_id="evt_" + secrets.token_hex(6),
                         event_type="payment.succeeded", payload={"data": {}}, status=status,
                         received_at=utcnow() - received_ago, **values)
    db.session.add(event)
    db.session.commit()
    return event


@pytest.fixture
def shop(app):
    """A healthy shop: two subscribers, an add-on buyer, a recent processed webhook."""
    asha, ben = make_user("asha@example.com"), make_user("ben@example.com")
    orders = {"asha": pay(asha), "ben": pay(ben, "family-monthly")}
    orders["pack"] = pay(ben, "meal-pack-5")
    webhook_event()
    # The emails the purchases queued went out.
    db.session.execute(sa.update(NotificationOutbox).values(status="sent", sent_at=utcnow()))
    db.session.commit()
    return {"asha_user": asha, "ben_user": ben, **orders}


def sub_of(order: Order) -> Subscription | None:
    return db.session.scalars(sa.select(Subscription).where(Subscription.order_id == order.id)).first()


def remove_subscription(order: Order) -> None:
    """Plant 'paid but no subscription': the subscription row is lost."""
    sub = sub_of(order)
    db.session.execute(sa.text("UPDATE credit_ledger SET subscription_id = NULL "
                               "WHERE subscription_id = :s"), {"s": sub.id})
    db.session.execute(sa.delete(Subscription).where(Subscription.id == sub.id))
    db.session.execute(sa.update(User).where(User.id == order.user_id)
                       .values(subscription_status="none"))
    db.session.commit()


def lose_subscription(order: Order, *, forget_recorded_id: bool = False) -> None:
    """Plant 'paid but no subscription' for a gateway order paid just now: the row is
    lost and the payment moved past the monitor's grace period. `forget_recorded_id`:
    an order paid before orders recorded the gateway's subscription id."""
    remove_subscription(order)
    row = db.session.get(Order, order.id)
    row.paid_at = row.created_at = utcnow() - timedelta(hours=1)
    if forget_recorded_id:
        row.gateway_data = {k: v for k, v in (row.gateway_data or {}).items()
                            if k != "gateway_subscription_id"}
    db.session.commit()


def monitor_json(runner, *args) -> tuple[int, dict]:
    result = runner.invoke(args=["monitor", "check", "--json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def found_checks(report: dict) -> dict:
    return {k: v for k, v in report["counts"].items() if v}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_sink(app):
    """A local SMTP server (aiosmtpd) that keeps every message; the app's mail points at it."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    messages = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_USE_TLS=False,
                      MAIL_USERNAME="", ALERT_EMAIL="ops@tiffin.example")
    yield messages
    controller.stop()


@pytest.fixture
def alert_hook(app, httpserver):
    """A Slack-compatible incoming webhook on a local HTTP server."""
    httpserver.expect_request("/hooks/alerts", method="POST").respond_with_data("ok")
    app.config["ALERT_WEBHOOK_URL"] = httpserver.url_for("/hooks/alerts")
    return httpserver


def hook_posts(server) -> list[dict]:
    return [req.get_json() for req, _ in server.log if req.path == "/hooks/alerts"]
