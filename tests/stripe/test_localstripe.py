"""Account actions and refunds against localstripe (real subscription and charge objects)."""
import pytest
import requests
import sqlalchemy as sa
import stripe

from app.extensions import db
from app.models import AuditLogEntry, Order, Subscription, User
from app.services.access import has_access
from app.services.fulfilment import _create_subscription_and_order
from tests.conftest import count, plan, user
from tests.fakes.stripe import FakeStripe, post_event
from tests.stripe.conftest import WEBHOOK_SECRET
from tests.stripe.helpers import reload


@pytest.fixture
def stripe_api_base(localstripe):
    return localstripe


@pytest.fixture
def ls(localstripe):
    return stripe.StripeClient("sk_test_tiffin", base_addresses={"api": localstripe},
                               max_network_retries=0)


def _customer_with_card(ls, email):
    cus = ls.v1.customers.create({"email": email})
    pm = ls.v1.payment_methods.create({"type": "card", "card": {
        "number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
    ls.v1.payment_methods.attach(pm.id, {"customer": cus.id})
    ls.v1.customers.update(cus.id, {"invoice_settings": {"default_payment_method": pm.id}})
    return cus, pm


def _subscribed(ls, auth):
    """A shopper whose Lunch plan is a real localstripe subscription."""
    auth.register()
    cus, _ = _customer_with_card(ls, "asha@example.com")
    product = ls.v1.products.create({"name": "Everyday Lunch"})
    ls.v1.plans.create({"id": "price_lunch", "product": product.id, "amount": 299900,
                        "currency": "inr", "interval": "month"})
    remote = ls.v1.subscriptions.create({"customer": cus.id, "items": [{"plan": "price_lunch"}]})
    result = _create_subscription_and_order(
        user(), plan("lunch-monthly"), "stripe", "cs_test_localstripe", remote.latest_invoice,
        299900, "INR", gateway_customer_id=cus.id, gateway_subscription_id=remote.id)
    return remote, result


def test_cancel_at_period_end_then_resume(client, auth, ls):
    remote, result = _subscribed(ls, auth)

    r = client.post("/account/subscription/cancel")

    assert r.status_code == 303
    assert ls.v1.subscriptions.retrieve(remote.id).cancel_at_period_end is True
    sub = reload(result.subscription)
    assert sub.cancel_at_period_end is True and has_access(sub)
    assert 'data-testid="ends-at-period-end"' in client.get("/account/").text

    r = client.post("/account/subscription/resume")

    assert r.status_code == 303
    assert ls.v1.subscriptions.retrieve(remote.id).cancel_at_period_end is False
    assert reload(result.subscription).cancel_at_period_end is False


def test_delete_account_cancels_at_stripe_first_and_keeps_orders(client, auth, ls):
    remote, result = _subscribed(ls, auth)
    user_id = user().id

    r = client.post("/account/delete", data={"password": "correct horse 1", "confirm": "y"})

    assert r.status_code == 303
    assert ls.v1.subscriptions.retrieve(remote.id).status == "canceled"
    db.session.expire_all()
    gone = db.session.get(User, user_id)
    assert gone.deleted_at is not None and gone.email == f"deleted-{user_id}@deleted.invalid"
    assert gone.name == "Deleted user" and gone.stripe_customer_id is None
    assert gone.plan_meal_credits == 0
    order = db.session.scalars(sa.select(Order)).one()
    assert order.status == "paid" and order.user_id == user_id and order.amount_minor == 299900
    sub = db.session.scalars(sa.select(Subscription)).one()
    assert sub.status == "canceled" and not has_access(sub)
    assert count(AuditLogEntry, AuditLogEntry.action == "account_deleted") == 1
    # Signed out, and the old credentials no longer work.
    assert client.get("/account/").status_code == 302
    assert "Sign in" in auth.login().text


def test_refund_made_at_stripe_reaches_us_as_charge_refunded(client, auth, ls, httpserver):
    """A real localstripe charge, refunded there, delivered as a signed charge.refunded."""
    auth.register()
    cus, pm = _customer_with_card(ls, "asha@example.com")
    pi = ls.v1.payment_intents.create({"amount": 79900, "currency": "inr", "customer": cus.id,
                                       "payment_method": pm.id, "confirm": True})
    assert pi.status == "succeeded"
    _create_subscription_and_order(user(), plan("meal-pack-5"), "stripe", "cs_test_pack", pi.id,
                                   79900, "INR", gateway_customer_id=cus.id)
    refund = ls.v1.refunds.create({"payment_intent": pi.id})
    charge = ls.v1.charges.retrieve(refund.charge).to_dict()
    assert charge["amount_refunded"] == 79900

    r = post_event(client, FakeStripe(httpserver).event("charge.refunded", charge), WEBHOOK_SECRET)

    assert r.json["status"] == "processed"
    order = db.session.scalars(sa.select(Order)).one()
    assert order.status == "refunded" and order.refunded_minor == 79900


@pytest.fixture
def live_app_url(app):
    """Our app on a real HTTP port, so localstripe can deliver webhooks to it."""
    import threading

    from werkzeug.serving import make_server

    from tests.stripe.conftest import free_port
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def localstripe_webhook(localstripe):
    """Register a localstripe webhook endpoint; muted afterwards (its data wipe keeps webhooks)."""
    def register(url, events):
        r = requests.post(f"{localstripe}/_config/webhooks/tiffin", timeout=5,
                          json={"url": url, "secret": WEBHOOK_SECRET, "events": events})
        assert r.status_code == 200, r.text
    yield register
    register("http://127.0.0.1:9/", [])


def _wait_for_event(event_type, object_id, *, deadline_seconds=20):
    """Poll until localstripe's delivery of `event_type` about `object_id` has been
    stored and handled. (localstripe sends a second after the change and to every
    endpoint registered by then, so an earlier test's event may arrive too.)"""
    import time

    from app.models import WebhookEvent
    end = time.monotonic() + deadline_seconds
    while time.monotonic() < end:
        db.session.expire_all()
        for row in db.session.scalars(sa.select(WebhookEvent).where(
                WebhookEvent.gateway == "stripe", WebhookEvent.event_type == event_type)):
            if row.payload["data"]["object"]["id"] == object_id and row.status != "received":
                return row
        time.sleep(0.1)
    pytest.fail(f"localstripe never delivered {event_type} for {object_id}")


def test_webhooks_signed_by_localstripe_end_the_subscription_then_the_customer(
        client, auth, ls, localstripe_webhook, live_app_url):
    remote, result = _subscribed(ls, auth)
    localstripe_webhook(f"{live_app_url}/webhooks/stripe",
                        ["customer.subscription.deleted", "customer.deleted"])

    ls.v1.subscriptions.cancel(remote.id)
    deleted = _wait_for_event("customer.subscription.deleted", remote.id)

    assert deleted.status == "processed"
    sub = reload(result.subscription)
    assert sub.status == "canceled" and has_access(sub)  # paid up to the period end

    ls.v1.customers.delete(remote.customer)
    gone = _wait_for_event("customer.deleted", remote.customer)

    assert gone.status == "processed"
    sub = reload(result.subscription)
    assert sub.status == "revoked" and sub.gateway_subscription_id is None
    assert not has_access(sub)
