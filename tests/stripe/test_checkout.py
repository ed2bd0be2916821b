"""Starting a Stripe checkout and the return page."""
import sqlalchemy as sa

from app.extensions import db
from app.gateways import get_gateway
from app.models import CreditLedgerEntry, Order, Subscription
from tests.conftest import count, form_token, user
from tests.flows import start_checkout
from tests.stripe.helpers import paid_session, point_stripe_at, reload, start


def _created_sessions(fake):
    return [(p, h) for m, path, p, h in fake.requests
            if m == "POST" and path == "/v1/checkout/sessions"]


def test_start_creates_session_from_our_order_and_redirects(client, auth, fake_stripe):
    auth.register()

    response, order = start(client)

    assert response.status_code == 303
    session = fake_stripe.sessions[order.gateway_order_id]
    assert response.location == session["url"]
    [(params, headers)] = _created_sessions(fake_stripe)
    u = user()
    assert params["mode"] == "subscription"
    assert params["line_items"] == [{"price": "price_lunch", "quantity": "1"}]
    assert params["client_reference_id"] == order.reference
    assert params["metadata"] == {"user_id": str(u.id), "plan_id": str(order.meal_plan_id),
                                  "order_reference": order.reference}
    assert params["subscription_data"]["metadata"] == params["metadata"]
    assert params["success_url"] == ("http://shop.test/checkout/stripe/return"
                                     "?session_id={CHECKOUT_SESSION_ID}")
    assert params["cancel_url"] == f"http://shop.test/checkout/cancel/{order.reference}"
    assert headers["Idempotency-Key"] == f"tiffin-checkout-{order.reference}"
    assert order.status == "pending" and order.checkout_url == session["url"]


def test_addon_pack_is_a_payment_mode_session(client, auth, fake_stripe):
    auth.register()
    start(client, "meal-pack-5")
    [(params, _)] = _created_sessions(fake_stripe)
    assert params["mode"] == "payment"
    assert params["payment_intent_data"]["metadata"]["order_reference"]


def test_urls_never_come_from_the_host_header(client, auth, fake_stripe):
    auth.register()
    page = client.get("/plans/lunch-monthly")
    client.post("/checkout/lunch-monthly", base_url="http://evil.example",
                data={"gateway": "stripe", "checkout_token": form_token(page.text, "checkout_token")})
    [(params, _)] = _created_sessions(fake_stripe)
    assert params["success_url"].startswith("http://shop.test/")
    assert params["cancel_url"].startswith("http://shop.test/")


def test_double_click_opens_one_session(client, auth, fake_stripe):
    auth.register()
    page = client.get("/plans/lunch-monthly")
    data = {"gateway": "stripe", "checkout_token": form_token(page.text, "checkout_token")}
    first = client.post("/checkout/lunch-monthly", data=data)
    second = client.post("/checkout/lunch-monthly", data=data)
    assert first.location == second.location
    assert len(fake_stripe.sessions) == 1 and count(Order) == 1


def test_idempotency_key_returns_the_same_session_when_stripe_is_asked_twice(app, auth, client,
                                                                              fake_stripe):
    auth.register()
    _, order = start(client)
    again = get_gateway("stripe").start_checkout(order=order, plan=order.meal_plan, user=user())
    assert again.gateway_order_id == order.gateway_order_id and len(fake_stripe.sessions) == 1


def test_stripe_down_at_start_is_gateway_unavailable(app, client, auth, fake_stripe):
    auth.register()
    point_stripe_at(app)
    response = start_checkout(client, gateway="stripe")
    assert response.status_code == 503 and "GATEWAY_UNAVAILABLE" in response.text
    assert db.session.scalars(sa.select(Order)).one().status == "failed"


def test_return_with_paid_session_fulfils_once(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe)

    r = client.get(f"/checkout/stripe/return?session_id={session['id']}")
    again = client.get(f"/checkout/stripe/return?session_id={session['id']}", follow_redirects=True)

    assert r.status_code == 303 and r.location.endswith(f"/checkout/success/{order.reference}")
    assert again.status_code == 200 and "your payment is confirmed" in again.text
    order = reload(order)
    assert order.status == "paid" and order.gateway_payment_id == session["invoice"]
    sub = db.session.scalars(sa.select(Subscription)).one()
    assert sub.gateway_subscription_id == session["subscription"]
    assert sub.gateway_customer_id == session["customer"]
    item = fake_stripe.subscriptions[session["subscription"]]["items"]["data"][0]
    assert int(sub.current_period_end.timestamp()) == item["current_period_end"]
    assert count(CreditLedgerEntry) == 1 and user().plan_meal_credits == 20


def test_return_while_payment_processing_is_pending_confirmation(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe, payment_status="unpaid")
    r = client.get(f"/checkout/stripe/return?session_id={session['id']}")
    assert r.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in r.text
    assert '<meta http-equiv="refresh"' in r.text
    assert reload(order).status == "pending" and count(Subscription) == 0


def test_return_when_stripe_unreachable_is_pending_never_failed(app, client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe)
    point_stripe_at(app)

    r = client.get(f"/checkout/stripe/return?session_id={session['id']}")

    assert r.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in r.text
    assert '<meta http-equiv="refresh"' in r.text
    assert reload(order).status == "pending"


def test_return_for_unpaid_open_session_is_not_completed(client, auth, fake_stripe):
    auth.register()
    _, order = start(client)
    r = client.get(f"/checkout/stripe/return?session_id={order.gateway_order_id}")
    assert r.status_code == 402 and "PAYMENT_NOT_COMPLETED" in r.text
    assert count(Subscription) == 0


def test_return_with_unknown_session_is_not_found(client, auth, fake_stripe):
    auth.register()
    r = client.get("/checkout/stripe/return?session_id=cs_test_nope")
    assert r.status_code == 404 and "PAYMENT_SESSION_NOT_FOUND" in r.text


def test_return_by_another_user_is_refused(client, auth, fake_stripe):
    auth.register()
    _, session = paid_session(client, fake_stripe)
    auth.logout()
    auth.register(email="ravi@example.com", name="Ravi")
    r = client.get(f"/checkout/stripe/return?session_id={session['id']}")
    assert r.status_code == 403 and "PAYMENT_USER_MISMATCH" in r.text
    assert count(Subscription) == 0


def test_return_with_metadata_naming_another_user_is_refused(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe)
    session["metadata"]["user_id"] = "999"
    r = client.get(f"/checkout/stripe/return?session_id={session['id']}")
    assert r.status_code == 403 and "PAYMENT_USER_MISMATCH" in r.text
    assert count(Subscription) == 0


def test_return_with_wrong_amount_is_refused_and_held_for_review(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe)
    session["amount_total"] = 100
    r = client.get(f"/checkout/stripe/return?session_id={session['id']}")
    assert r.status_code == 409 and "PAYMENT_AMOUNT_MISMATCH" in r.text
    assert reload(order).status == "needs_review" and count(Subscription) == 0


def test_return_with_wrong_currency_is_refused(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe)
    session["currency"] = "usd"
    r = client.get(f"/checkout/stripe/return?session_id={session['id']}")
    assert r.status_code == 409 and "PAYMENT_AMOUNT_MISMATCH" in r.text


def test_cancel_url_cancels_the_pending_order(client, auth, fake_stripe):
    auth.register()
    _, order = start(client)
    r = client.get(f"/checkout/cancel/{order.reference}")
    assert r.status_code == 200 and reload(order).status == "canceled"


def test_addon_pack_return_adds_meals(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe, "meal-pack-5")
    client.get(f"/checkout/stripe/return?session_id={session['id']}")
    order = reload(order)
    assert order.status == "paid" and order.gateway_payment_id == session["payment_intent"]
    assert user().addon_meal_credits == 5
