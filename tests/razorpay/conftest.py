"""Fixtures for the Razorpay tests: the app pointed at a local fake Razorpay.

The real `razorpay` SDK talks HTTP to tests/fakes/razorpay.py; nothing is patched.
"""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Order
from tests.conftest import form_token, make_app, serve_app
from tests.fakes.razorpay import FakeRazorpay

KEY_ID = "rzp_test_TiffinKey0001"
KEY_SECRET = "rzp_test_secret_0001"
WEBHOOK_SECRET = "whsec_rzp_current"
OLD_WEBHOOK_SECRET = "whsec_rzp_previous"


@pytest.fixture
def razorpay_fake(httpserver):
    return FakeRazorpay(httpserver, key_id=KEY_ID, key_secret=KEY_SECRET)


@pytest.fixture
def app(_schema, razorpay_fake):
    yield from serve_app(make_app(RAZORPAY_KEY_ID=KEY_ID, RAZORPAY_KEY_SECRET=KEY_SECRET,
                   RAZORPAY_WEBHOOK_SECRET=f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
                   RAZORPAY_API_BASE=razorpay_fake.base_url, CHECKOUT_RATE_LIMIT="100 per minute"))


@pytest.fixture
def synced_plans(runner):
    """Every recurring plan linked to a Razorpay plan, as `flask razorpay sync-plans` does."""
    result = runner.invoke(args=["razorpay", "sync-plans"])
    assert result.exit_code == 0, result.output


class Shop:
    """The shopper's browser and Razorpay's side of one purchase."""

    def __init__(self, client, fake):
        self.client, self.fake = client, fake

    def checkout_page(self, slug="meal-pack-5", token=None):
        page = self.client.get(f"/plans/{slug}")
        token = token or form_token(page.text, "checkout_token")
        return self.client.post(f"/checkout/{slug}", data={"gateway": "razorpay",
                                                           "checkout_token": token})

    def start(self, slug="meal-pack-5") -> tuple[str, str]:
        """Open the checkout page; returns (razorpay id on the page, our order id field)."""
        page = self.checkout_page(slug)
        assert page.status_code == 200, page.text
        gateway_id = re.search(r'data-(?:order|subscription)-id="([^"]+)"', page.text).group(1)
        posted = re.search(r'name="order_id" value="([^"]+)"', page.text).group(1)
        return gateway_id, posted

    def verify(self, order_id, payment_id, signature=None, *, posted_razorpay_order_id=None,
               follow=False):
        """What checkout.js posts after a one-time payment."""
        data = {"order_id": order_id, "razorpay_order_id": posted_razorpay_order_id or order_id,
                "razorpay_payment_id": payment_id,
                "razorpay_signature": signature if signature is not None
                else self.fake.checkout_signature(order_id, payment_id)}
        return self.client.post("/payments/razorpay/verify", data=data, follow_redirects=follow)

    def verify_subscription(self, sub_id, payment_id, signature=None, follow=False):
        data = {"order_id": sub_id, "razorpay_subscription_id": sub_id,
                "razorpay_payment_id": payment_id,
                "razorpay_signature": signature if signature is not None
                else self.fake.subscription_signature(payment_id, sub_id)}
        return self.client.post("/payments/razorpay/verify", data=data, follow_redirects=follow)

    def webhook(self, event, *, secret=WEBHOOK_SECRET, event_id=None, client=None,
                created_at=None, **entities):
        body, headers = self.fake.webhook(event, secret=secret, event_id=event_id,
                                          created_at=created_at, **entities)
        return (client or self.client).post("/webhooks/razorpay", data=body, headers=headers)


@pytest.fixture
def shop(client, auth, razorpay_fake):
    auth.register()
    return Shop(client, razorpay_fake)


def order_row(gateway_order_id: str) -> Order:
    db.session.expire_all()
    return db.session.scalars(sa.select(Order).where(Order.gateway == "razorpay",
                                                     Order.gateway_order_id == gateway_order_id)).one()
