"""Reconcile against Stripe: the real adapter and SDK over HTTP to the local Stripe fake."""
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, Order, Subscription
from tests.conftest import count, make_app, serve_app
from tests.fakes.stripe import link_stripe_prices
from tests.fakes.stripe import FakeStripe, post_event
from tests.flows import start_checkout

SECRET = "whsec_ops_reconcile"


@pytest.fixture
def fake_stripe(httpserver):
    fake = FakeStripe(httpserver)
    fake.add_price("price_lunch", 299900)
    fake.add_price("price_pack5", 79900, interval=None)
    return fake


@pytest.fixture
def app(_schema, fake_stripe):
    yield from serve_app(
        make_app(STRIPE_SECRET_KEY="sk_test_tiffin", STRIPE_PUBLISHABLE_KEY="pk_test_tiffin",
                 STRIPE_WEBHOOK_SECRET=SECRET, STRIPE_API_BASE=fake_stripe.url,
                 TEST_GATEWAY_ENABLED=False),
        lambda: link_stripe_prices({"lunch-monthly": "price_lunch", "meal-pack-5": "price_pack5"}))


@pytest.mark.parametrize("slug", ["lunch-monthly", "meal-pack-5"])
def test_paid_session_without_webhook_is_fulfilled_once(app, client, auth, runner, fake_stripe, slug):
    auth.register()
    assert start_checkout(client, slug=slug, gateway="stripe").status_code == 303
    order = db.session.scalars(sa.select(Order)).one()
    session = fake_stripe.complete_session(order.gateway_order_id)  # paid; webhook never sent

    listed = runner.invoke(args=["reconcile", "--since", "1h"])
    assert listed.exit_code == 2 and order.gateway_order_id in listed.stdout
    fixed = runner.invoke(args=["reconcile", "--since", "1h", "--fix"])
    assert fixed.exit_code == 0, fixed.output
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "paid"
    subs, grants = count(Subscription), count(CreditLedgerEntry)
    assert grants == 1 and subs == (1 if slug == "lunch-monthly" else 0)

    late = post_event(client, fake_stripe.event("checkout.session.completed", session), SECRET)
    assert late.status_code == 200
    db.session.expire_all()
    assert (count(Subscription), count(CreditLedgerEntry)) == (subs, grants)
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled") == 1
    assert runner.invoke(args=["reconcile", "--since", "1h"]).exit_code == 0


def test_unpaid_session_is_left_alone(app, client, auth, runner, fake_stripe):
    auth.register()
    start_checkout(client, gateway="stripe")
    result = runner.invoke(args=["reconcile", "--fix"])
    assert result.exit_code == 0 and "stripe: 1" in result.stdout
    assert db.session.scalars(sa.select(Order)).one().status == "pending"


def _payment_intent_of(fake_stripe, session) -> str:
    if session["payment_intent"]:
        return session["payment_intent"]
    return next(p["payment"]["payment_intent"] for p in fake_stripe.invoice_payments
                if p["invoice"] == session["invoice"])


@pytest.mark.parametrize("slug", ["lunch-monthly", "meal-pack-5"])
@pytest.mark.parametrize("session_age_hours", [0, 48])
def test_refund_made_at_stripe_without_webhook_is_reported(app, client, auth, runner, fake_stripe,
                                                           slug, session_age_hours):
    """Stripe's Events API shows a refund we never heard of, for a session bought just
    now or before the window (found through its PaymentIntent, invoice and subscription)."""
    auth.register()
    start_checkout(client, slug=slug, gateway="stripe")
    order = db.session.scalars(sa.select(Order)).one()
    session = fake_stripe.complete_session(order.gateway_order_id)
    assert post_event(client, fake_stripe.event("checkout.session.completed", session),
                      SECRET).status_code == 200
    session["created"] -= session_age_hours * 3600
    assert runner.invoke(args=["reconcile", "--since", "1h"]).exit_code == 0

    charge = fake_stripe.charge(payment_intent=_payment_intent_of(fake_stripe, session),
                                amount=order.amount_minor, amount_refunded=order.amount_minor)
    fake_stripe.record_event(fake_stripe.event("charge.refunded", charge))  # webhook lost

    result = runner.invoke(args=["reconcile", "--since", "1h"])
    assert result.exit_code == 1, result.output
    assert "refunded_there" in result.stdout and order.gateway_order_id in result.stdout
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "paid"  # reported, not silently changed
