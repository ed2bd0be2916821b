"""Pending orders with their signed success redirect and signed webhook, ready to
be fired at a running shop: one sender class per gateway (the built-in test
gateway, Stripe and Razorpay), looked up by name in SENDERS.

A sender opens the order through the real checkout service (which, for Stripe
and Razorpay, calls the gateway's API through its official SDK: here the local
fakes of bench/fake_gateways.py), plays the shopper paying at the gateway, then
mints exactly what that gateway sends back — the shopper's return (a redirect,
or Razorpay Checkout's form post) with the gateway's signature, and a webhook
body signed with the shop's webhook secret — so the shop's real verification,
storage and fulfilment code runs for every request.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from functools import partial
from typing import Callable
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa
from flask import session as flask_session
from flask_wtf.csrf import generate_csrf
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.gateways import get_gateway
from app.gateways.test import SIGNATURE_HEADER
from app.models import MealPlan, User
from app.services.checkout import start_checkout
from app.services.razorpay_sync import sync_plans
from app.services.stripe_sync import sync_prices
from tests.fakes.stripe import signed_headers


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
    redirect_path: str            # GET with the user's session cookie (POST with redirect_form)
    session_cookie: str
    webhook_path: str             # POST with webhook_body and webhook_headers
    webhook_body: bytes
    webhook_headers: dict = field(default_factory=dict)
    redirect_form: dict | None = None  # a callback the gateway's script posts (Razorpay)
    # For a gateway that signs the delivery time (Stripe): headers signed afresh per delivery.
    sign_webhook: Callable[[bytes], dict] | None = None

    def delivery_headers(self) -> dict:
        """The headers of one webhook delivery, as the gateway would sign it now."""
        return self.sign_webhook(self.webhook_body) if self.sign_webhook else self.webhook_headers


def _session_cookie(app, user_id: int, *, form_token: bool) -> tuple[str, str | None]:
    # A fresh app context too: generate_csrf caches its token on `g` for the context.
    with app.app_context(), app.test_request_context():
        flask_session.update({"_user_id": str(user_id), "_fresh": True})
        token = generate_csrf() if form_token else None  # keeps its raw half in the session
        cookie = app.session_interface.get_signing_serializer(app).dumps(dict(flask_session))
    return cookie, token


def login_cookie(app, user_id: int) -> str:
    """A signed Flask session cookie for this user, as /login would set it."""
    return _session_cookie(app, user_id, form_token=False)[0]


def login_cookie_with_form_token(app, user_id: int) -> tuple[str, str]:
    """A login cookie and the CSRF token a page of ours rendered into a form for that
    session (what the Razorpay checkout page's verify form carries)."""
    return _session_cookie(app, user_id, form_token=True)


def create_shoppers(count: int, prefix: str) -> list[User]:
    """`count` new users in one transaction (one password hash shared: speed)."""
    password_hash = generate_password_hash("storm password 1")
    users = [User(email=f"{prefix}-{i}@example.com", name=f"Shopper {i}", password_hash=password_hash)
             for i in range(count)]
    db.session.add_all(users)
    db.session.commit()
    return users


def _meals(plan_slug: str) -> int:
    return db.session.scalars(sa.select(MealPlan.meals_per_period)
                              .where(MealPlan.slug == plan_slug)).one()


class TestGatewaySender:
    """Signed redirects and webhooks of the built-in test gateway."""

    name = "test"

    def __init__(self, app, fakes=None):
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
        return Payment(
            gateway=self.name, order_id=order.id, order_reference=order.reference,
            user_id=user.id, plan_slug=plan_slug, meals=_meals(plan_slug),
            event_id=json.loads(body)["id"],
            redirect_path=f"/payments/{self.name}/return?{urlencode(params)}",
            session_cookie=login_cookie(self.app, user.id),
            webhook_path=f"/webhooks/{self.name}", webhook_body=body,
            webhook_headers={SIGNATURE_HEADER: self.gateway.sign_body(body),
                             "Content-Type": "application/json"})


class StripeSender:
    """Stripe Checkout: the session completes at (fake) Stripe, the shopper lands on
    the session's success_url, and `checkout.session.completed` is signed with
    `Stripe-Signature: t=…,v1=…` (signed afresh per delivery, as Stripe does)."""

    name = "stripe"

    def __init__(self, app, fakes):
        self.app, self.fake = app, fakes.stripe
        self.secret = app.config["STRIPE_WEBHOOK_SECRET"].split(",")[0].strip()
        # What `flask stripe sync-prices` does: a Product and Price per plan at Stripe.
        sync_prices(get_gateway("stripe"), actor="bench:payments")

    def prepare(self, user: User, plan_slug: str) -> Payment:
        order, started = start_checkout(user, plan_slug, self.name, secrets.token_urlsafe(16))
        with self.fake.lock:
            checkout = self.fake.complete_session(started.gateway_order_id)
            event = self.fake.record_event(self.fake.event("checkout.session.completed", checkout))
            body = json.dumps(event).encode()
            success = urlsplit(checkout["success_url"].replace("{CHECKOUT_SESSION_ID}",
                                                              checkout["id"]))
        sign = partial(signed_headers, secret=self.secret)
        return Payment(
            gateway=self.name, order_id=order.id, order_reference=order.reference,
            user_id=user.id, plan_slug=plan_slug, meals=_meals(plan_slug), event_id=event["id"],
            redirect_path=f"{success.path}?{success.query}",
            session_cookie=login_cookie(self.app, user.id),
            webhook_path=f"/webhooks/{self.name}", webhook_body=body,
            webhook_headers=sign(body), sign_webhook=sign)


class RazorpaySender:
    """Razorpay Checkout: the shopper pays at (fake) Razorpay, checkout.js posts the
    signed result to /payments/razorpay/verify, and the webhook carries
    `X-Razorpay-Signature` (HMAC of the raw body) and `X-Razorpay-Event-Id`. A meal
    plan is a Razorpay subscription (`subscription.charged`); a pack an order
    (`order.paid`)."""

    name = "razorpay"

    def __init__(self, app, fakes):
        self.app, self.fake = app, fakes.razorpay
        self.secret = app.config["RAZORPAY_WEBHOOK_SECRET"].split(",")[0].strip()
        sync_plans()  # what `flask razorpay sync-plans` does: a Razorpay plan per meal plan

    def prepare(self, user: User, plan_slug: str) -> Payment:
        order, started = start_checkout(user, plan_slug, self.name, secrets.token_urlsafe(16))
        context, remote_id = started.context, started.gateway_order_id
        cookie, form_token = login_cookie_with_form_token(self.app, user.id)
        form = {"csrf_token": form_token, "order_id": remote_id, "razorpay_order_id": "",
                "razorpay_subscription_id": ""}
        with self.fake.lock:
            if context["razorpay_subscription_id"]:
                payment = self.fake.charge_subscription(remote_id)
                signature = self.fake.subscription_signature(payment["id"], remote_id)
                form["razorpay_subscription_id"] = remote_id
                event, entities = "subscription.charged", {
                    "subscription": self.fake.subscriptions[remote_id]}
            else:
                payment = self.fake.pay_order(remote_id)
                signature = self.fake.checkout_signature(remote_id, payment["id"])
                form["razorpay_order_id"] = remote_id
                event, entities = "order.paid", {"order": self.fake.orders[remote_id]}
            payment["notes"] = dict(context["notes"])  # checkout.js passes our notes along
            body, headers = self.fake.webhook(event, secret=self.secret, payment=payment,
                                              **entities)
        form.update(razorpay_payment_id=payment["id"], razorpay_signature=signature)
        return Payment(
            gateway=self.name, order_id=order.id, order_reference=order.reference,
            user_id=user.id, plan_slug=plan_slug, meals=_meals(plan_slug),
            event_id=headers["X-Razorpay-Event-Id"],
            redirect_path=f"/payments/{self.name}/verify", redirect_form=form,
            session_cookie=cookie, webhook_path=f"/webhooks/{self.name}", webhook_body=body,
            webhook_headers=headers)


SENDERS = {"test": TestGatewaySender, "stripe": StripeSender, "razorpay": RazorpaySender}


def prepare_payments(app, count: int, *, gateways: list[str], plans: list[str], prefix: str,
                     rng, fakes=None) -> list[Payment]:
    """`count` distinct pending orders, one per new shopper, mixed across `gateways`
    (as evenly as `count` allows, in random order) and `plans`. Stripe and Razorpay
    need `fakes` (bench.fake_gateways.FakeGateways, which the app's settings point
    at). Call inside an app context."""
    senders = {name: SENDERS[name](app, fakes) for name in gateways}
    assigned = [gateways[i % len(gateways)] for i in range(count)]
    rng.shuffle(assigned)
    users = create_shoppers(count, prefix)
    return [senders[name].prepare(user, rng.choice(plans)) for name, user in zip(assigned, users)]
