"""Fixtures for the operator console: an operator, a shopper, and clients signed in as each."""
from __future__ import annotations

import pytest

from app.extensions import db
from app.models import User

PASSWORD = "correct horse 1"


def make_account(email: str, role: str = "shopper") -> User:
    person = User(email=email, name=email.split("@")[0].title(), role=role)
    person.set_password(PASSWORD)
    db.session.add(person)
    db.session.commit()
    return person


def sign_in(client, email: str) -> None:
    r = client.post("/login", data={"email": email, "password": PASSWORD})
    assert r.status_code == 302, r.text


@pytest.fixture
def operator(app):
    return make_account("olga.operator@example.com", role="operator")


@pytest.fixture
def ops_client(app, operator):
    client = app.test_client()
    sign_in(client, operator.email)
    return client


@pytest.fixture
def shopper_client(app):
    make_account("sam.shopper@example.com")
    client = app.test_client()
    sign_in(client, "sam.shopper@example.com")
    return client


def stored_event(gateway="test", status="processed", received_ago=None, **values):
    """A stored webhook event as the inbox holds it."""
    import secrets
    from datetime import timedelta

    from app.models import WebhookEvent, utcnow

    values.setdefault("event_type", "payment.succeeded")
    values.setdefault("payload", {"data": {}})
    event = WebhookEvent(gateway=gateway, event_id="evt_" + secrets.token_hex(6), status=status,
                         received_at=utcnow() - (received_ago or timedelta(0)), **values)
    db.session.add(event)
    db.session.commit()
    return event
