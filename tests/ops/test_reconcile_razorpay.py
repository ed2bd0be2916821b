"""Reconcile against Razorpay: the real adapter and SDK over HTTP to the local Razorpay fake."""
import re

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, Order
from tests.conftest import count, form_token, make_app, serve_app
from tests.fakes.razorpay import FakeRazorpay

KEY_ID, KEY_SECRET, WEBHOOK_SECRET = "rzp_test_OpsKey0001", "rzp_ops_secret", "whsec_rzp_ops"


@pytest.fixture
def razorpay_fake(httpserver):
    return FakeRazorpay(httpserver, key_id=KEY_ID, key_secret=KEY_SECRET)


@pytest.fixture
def app(_schema, razorpay_fake):
    yield from serve_app(make_app(RAZORPAY_KEY_ID=KEY_ID, RAZORPAY_KEY_SECRET=KEY_SECRET,
                   RAZORPAY_WEBHOOK_SECRET=WEBHOOK_SECRET, RAZORPAY_API_BASE=razorpay_fake.base_url,
                   TEST_GATEWAY_ENABLED=False))


def _open_pack_checkout(client) -> str:
    """Start a Razorpay checkout for the add-on pack; return the Razorpay order id it opened."""
    page = client.get("/plans/meal-pack-5")
    checkout = client.post("/checkout/meal-pack-5", data={
        "gateway": "razorpay", "checkout_token": form_token(page.text, "checkout_token")})
    assert checkout.status_code == 200, checkout.text
    return re.search(r'data-order-id="([^"]+)"', checkout.text).group(1)


def test_captured_payment_without_webhook_is_fulfilled_once(app, client, auth, runner,
                                                            razorpay_fake):
    auth.register()
    gateway_order_id = _open_pack_checkout(client)
    payment = razorpay_fake.pay_order(gateway_order_id)  # the shopper closed the tab; no webhook

    assert runner.invoke(args=["reconcile", "--since", "1h"]).exit_code == 2
    fixed = runner.invoke(args=["reconcile", "--since", "1h", "--fix"])
    assert fixed.exit_code == 0, fixed.output
    order = db.session.scalars(sa.select(Order)).one()
    assert order.status == "paid" and count(CreditLedgerEntry) == 1

    body, headers = FakeRazorpay.webhook("payment.captured", secret=WEBHOOK_SECRET, payment=payment)
    assert client.post("/webhooks/razorpay", data=body, headers=headers).status_code == 200
    db.session.expire_all()
    assert count(CreditLedgerEntry) == 1
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled") == 1
    assert runner.invoke(args=["reconcile", "--since", "1h"]).exit_code == 0


def test_refund_made_at_razorpay_without_webhook_is_reported(app, client, auth, runner,
                                                             razorpay_fake):
    auth.register()
    gateway_order_id = _open_pack_checkout(client)
    payment = razorpay_fake.pay_order(gateway_order_id)
    body, headers = FakeRazorpay.webhook("payment.captured", secret=WEBHOOK_SECRET, payment=payment)
    assert client.post("/webhooks/razorpay", data=body, headers=headers).status_code == 200
    assert runner.invoke(args=["reconcile", "--since", "1h"]).exit_code == 0

    razorpay_fake.refund_outside(payment["id"], payment["amount"])  # from the dashboard; no webhook

    result = runner.invoke(args=["reconcile", "--since", "1h"])
    assert result.exit_code == 1, result.output
    assert "refunded_there" in result.stdout and gateway_order_id in result.stdout
