"""Shopper and Stripe steps shared by the Stripe tests."""
from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import Order, Subscription
from tests.flows import start_checkout
from tests.fakes.stripe import post_event
from tests.stripe.conftest import WEBHOOK_SECRET


def start(client, slug="lunch-monthly"):
    """Submit the plan page's checkout form with Stripe; returns (response, order)."""
    response = start_checkout(client, slug, gateway="stripe")
    order = db.session.scalars(sa.select(Order).order_by(Order.id.desc())).first()
    return response, order


def paid_session(client, fake, slug="lunch-monthly", **complete):
    """Start a checkout and pay for it at "Stripe"; returns (order, session)."""
    response, order = start(client, slug)
    assert response.status_code == 303, response.text
    return order, fake.complete_session(order.gateway_order_id, **complete)


def deliver(client, fake, type_, obj, *, secret=WEBHOOK_SECRET, timestamp=None, **event_kw):
    """Build an event around `obj` and POST it signed; returns (response, event)."""
    event = fake.event(type_, obj, **event_kw)
    return post_event(client, event, secret, timestamp=timestamp), event


def subscribe(client, fake, slug="lunch-monthly"):
    """A paid subscription through checkout.session.completed; returns (order, session, sub)."""
    order, session = paid_session(client, fake, slug)
    r, _ = deliver(client, fake, "checkout.session.completed", session)
    assert r.status_code == 200 and r.json["status"] == "processed", r.text
    sub = db.session.scalars(sa.select(Subscription)).one()
    return order, session, sub


def reload(obj):
    db.session.expire_all()
    return db.session.get(type(obj), obj.id)


def point_stripe_at(app, url="http://127.0.0.1:9"):
    """Rebuild the Stripe client against `url` (default: a port nothing listens on)."""
    app.config["STRIPE_API_BASE"] = url
    app.extensions.get("tiffin_gateways", {}).pop("stripe", None)
