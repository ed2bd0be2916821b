"""Stripe: a Checkout Session lives as long as the checkout (clamped to Stripe's
30 minutes to 24 hours), and the pending page asks Stripe about a lost webhook."""
from datetime import datetime, timedelta, timezone

import pytest

from app.gateways.stripe import session_expiry
from app.models import Subscription
from tests.conftest import count
from tests.stripe.helpers import paid_session, point_stripe_at, reload, start


def _session_params(fake):
    return [p for m, path, p, _ in fake.requests if m == "POST" and path == "/v1/checkout/sessions"]


def test_session_expires_with_the_checkout(app, client, auth, fake_stripe):
    auth.register()
    before = datetime.now(timezone.utc)
    response, order = start(client)

    assert response.status_code == 303
    [params] = _session_params(fake_stripe)
    expires_at = datetime.fromtimestamp(int(params["expires_at"]), tz=timezone.utc)
    assert before + timedelta(minutes=59) <= expires_at <= before + timedelta(minutes=61)
    assert int(order.checkout_expires_at.timestamp()) == int(params["expires_at"])


@pytest.mark.parametrize("minutes, low, high", [(5, 31, 32), (3 * 24 * 60, 23 * 60, 24 * 60)])
def test_a_lifetime_stripe_would_refuse_is_clamped(app, client, auth, fake_stripe, minutes,
                                                  low, high):
    app.config["CHECKOUT_EXPIRY_MINUTES"] = minutes
    auth.register()
    before = datetime.now(timezone.utc).replace(microsecond=0)  # Stripe keeps whole seconds
    response, order = start(client)

    assert response.status_code == 303, response.text  # Stripe accepted it
    [params] = _session_params(fake_stripe)
    expires_at = datetime.fromtimestamp(int(params["expires_at"]), tz=timezone.utc)
    assert before + timedelta(minutes=low) <= expires_at <= before + timedelta(minutes=high)
    assert order.checkout_expires_at == expires_at  # the order lives as long as the session


def test_session_expiry_clamps_and_says_so(caplog):
    now = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    assert session_expiry(now + timedelta(minutes=60), now) == now + timedelta(minutes=60)
    assert session_expiry(now + timedelta(minutes=1), now) == now + timedelta(minutes=31)
    assert session_expiry(now + timedelta(days=2), now) == now + timedelta(hours=24, minutes=-1)
    assert "clamped" in caplog.text


def test_lost_webhook_pending_page_asks_stripe_and_fulfils(client, auth, fake_stripe):
    auth.register()
    order, _ = paid_session(client, fake_stripe)  # paid at Stripe; no webhook, no return

    page = client.get(f"/checkout/success/{order.reference}")

    assert page.status_code == 200 and "your payment is confirmed" in page.text
    assert reload(order).status == "paid" and count(Subscription) == 1


def test_open_session_is_waiting_for_the_shopper(client, auth, fake_stripe):
    auth.register()
    _, order = start(client)
    session_url = fake_stripe.sessions[order.gateway_order_id]["url"]

    page = client.get(f"/checkout/success/{order.reference}")

    assert page.status_code == 402 and "PAYMENT_AWAITING_SHOPPER" in page.text
    back = client.get(f"/checkout/continue/{order.reference}")
    assert back.status_code == 303 and back.location == session_url


def test_processing_session_is_confirming(client, auth, fake_stripe):
    auth.register()
    order, _ = paid_session(client, fake_stripe, "meal-pack-5", payment_status="unpaid")

    page = client.get(f"/checkout/success/{order.reference}")

    assert page.status_code == 202 and "Your payment has been received" in page.text
    assert reload(order).gateway_said == "pending"


def test_stripe_down_is_we_could_not_ask(app, client, auth, fake_stripe):
    auth.register()
    _, order = start(client)
    point_stripe_at(app)

    page = client.get(f"/checkout/success/{order.reference}")

    assert page.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in page.text
    assert "could not reach the payment provider yet" in page.text
