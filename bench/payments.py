"""Pending orders with their signed success redirect and signed webhook, ready to
be fired at a running shop: one sender class per gateway (only the built-in
test gateway so far), looked up by name in SENDERS.

A sender mints exactly what that gateway would send — a return URL carrying its
signature and a webhook body signed with the shop's webhook secret — so the
shop's real verification, storage and fulfilment code runs for every request.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from urllib.parse import urlencode

import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.gateways import get_gateway
from app.gateways.test import SIGNATURE_HEADER
from app.models import MealPlan, User
from app.services.checkout import start_checkout


@dataclass
class Payment:
    """One payment as the shop will hear of it: a redirect and a webhook."""

    gateway: str
    order_id: int
    order_reference: str
    user_id: int
    plan_slug: str
    meals: int
    event_id: str
    redirect_path: str            # GET with the user's session cookie
    session_cookie: str
    webhook_path: str             # POST with webhook_body and webhook_headers
    webhook_body: bytes
    webhook_headers: dict = field(default_factory=dict)


def login_cookie(app, user_id: int) -> str:
    """A signed Flask session cookie for this user, as /login would set it."""
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.dumps({"_user_id": str(user_id), "_fresh": True})


def create_shoppers(count: int, prefix: str) -> list[User]:
    """`count` new users in one transaction (one password hash shared: speed)."""
    password_hash = generate_password_hash("storm password 1")
    users = [User(email=f"{prefix}-{i}@example.com", name=f"Shopper {i}", password_hash=password_hash)
             for i in range(count)]
    db.session.add_all(users)
    db.session.commit()
    return users


class TestGatewaySender:
    """Signed redirects and webhooks of the built-in test gateway."""

    name = "test"

    def __init__(self, app):
        self.app = app
        self.gateway = get_gateway("test")

    def prepare(self, user: User, plan_slug: str) -> Payment:
        """Open a real pending order through the checkout service, then mint what
        the gateway would send back for a successful payment of it."""
        order, started = start_checkout(user, plan_slug, self.name, secrets.token_urlsafe(16))
        session = self.gateway.load_session(started.redirect_url.rsplit("/", 1)[-1])
        payment_id = "tgp_" + secrets.token_hex(12)
        params = self.gateway.signed_return_params(session, "paid", payment_id=payment_id)
        body = self.gateway.build_event(session, "payment.succeeded", payment_id=payment_id)

        plan = db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == plan_slug)).one()
        return Payment(
            gateway=self.name, order_id=order.id, order_reference=order.reference,
            user_id=user.id, plan_slug=plan_slug, meals=plan.meals_per_period,
            event_id=json.loads(body)["id"],
            redirect_path=f"/payments/{self.name}/return?{urlencode(params)}",
            session_cookie=login_cookie(self.app, user.id),
            webhook_path=f"/webhooks/{self.name}", webhook_body=body,
            webhook_headers={SIGNATURE_HEADER: self.gateway.sign_body(body),
                             "Content-Type": "application/json"})


# Stripe and Razorpay senders join here once their adapters land: each needs only
# prepare(user, plan_slug) -> Payment with that gateway's signed return and webhook.
SENDERS = {"test": TestGatewaySender}


def prepare_payments(app, count: int, *, gateways: list[str], plans: list[str], prefix: str,
                     rng) -> list[Payment]:
    """`count` distinct pending orders, one per new shopper, mixed across
    `gateways` and `plans`. Call inside an app context."""
    senders = [SENDERS[name](app) for name in gateways]
    users = create_shoppers(count, prefix)
    return [senders[i % len(senders)].prepare(user, rng.choice(plans))
            for i, user in enumerate(users)]
