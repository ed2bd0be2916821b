"""The whole purchase on the test gateway, and every test-gateway outcome."""
import sqlalchemy as sa

from app.extensions import db
from app.models import CreditLedgerEntry, NotificationOutbox, Order, Subscription, WebhookEvent
from tests.conftest import count, user
from tests.flows import order_reference, pay, start_checkout


def test_register_buy_and_see_order_subscription_and_credits(client, auth):
    r = auth.register()
    assert r.status_code == 302
    catalogue = client.get("/")
    assert "Everyday Lunch" in catalogue.text and "Extra Meals" in catalogue.text

    r = pay(client, "lunch-monthly", "pay")

    assert r.status_code == 200
    assert r.request.path.startswith("/checkout/success/")
    assert "your payment is confirmed" in r.text
    order = db.session.scalars(sa.select(Order)).one()
    assert order.reference in r.text
    assert order.status == "paid" and order.amount_minor == 299900 and order.currency == "INR"
    sub = db.session.scalars(sa.select(Subscription)).one()
    assert sub.status == "active" and sub.order_id == order.id
    assert 'data-testid="subscription-status">active' in r.text
    assert user().meal_credits == 20 and user().subscription_status == "active"
    assert '<strong>20</strong>' in r.text
    assert count(CreditLedgerEntry) == 1
    assert count(NotificationOutbox, NotificationOutbox.kind == "payment_confirmed") == 1
    # The same success page is served again on refresh, changing nothing.
    again = client.get(r.request.path)
    assert again.status_code == 200 and count(CreditLedgerEntry) == 1

    account = client.get("/account/")
    assert "Everyday Lunch" in account.text and order.reference in account.text
    assert "Current period ends" in account.text


def test_decline_shows_reason_and_shopper_can_try_again(client, auth):
    auth.register()
    r = pay(client, outcome="decline", reason="insufficient_funds")

    assert r.status_code == 402
    assert "PAYMENT_DECLINED" in r.text and "insufficient funds" in r.text
    assert 'href="/plans/lunch-monthly" data-testid="try-again"' in r.text
    assert order_reference(r.text)
    order = db.session.scalars(sa.select(Order)).one()
    assert order.status == "failed" and order.failure_code == "insufficient_funds"
    assert count(Subscription) == 0 and user().meal_credits == 0

    retry = pay(client, outcome="pay")
    assert retry.status_code == 200 and "your payment is confirmed" in retry.text
    assert count(Order, Order.status == "paid") == 1 and count(Subscription) == 1


def test_redirect_never_returns_webhook_alone_fulfils(client, auth):
    auth.register()
    r = pay(client, outcome="pay_no_redirect")

    assert r.status_code == 200 and "redirect back to the shop" in r.text
    assert count(Order, Order.status == "paid") == 1 and count(Subscription) == 1
    account = client.get("/account/")
    assert 'data-testid="subscription-status">active' in account.text
    assert user().meal_credits == 20


def test_webhook_never_arrives_redirect_alone_fulfils(client, auth):
    auth.register()
    r = pay(client, outcome="pay_no_webhook")

    assert r.status_code == 200 and "your payment is confirmed" in r.text
    assert count(WebhookEvent) == 0
    assert count(Order, Order.status == "paid") == 1 and count(Subscription) == 1
    assert count(CreditLedgerEntry) == 1


def test_webhook_delivered_three_times_fulfils_once(client, auth):
    auth.register()
    r = pay(client, outcome="pay_webhook_x3")

    assert r.status_code == 200 and "your payment is confirmed" in r.text
    assert count(WebhookEvent) == 1
    event = db.session.scalars(sa.select(WebhookEvent)).one()
    assert event.status == "processed" and event.attempts == 1
    assert count(Order) == 1 and count(Subscription) == 1 and count(CreditLedgerEntry) == 1
    assert count(NotificationOutbox) == 1
    assert user().meal_credits == 20


def test_add_on_pack_adds_meals_on_top_of_plan(client, auth):
    auth.register()
    pay(client, "lunch-monthly")
    r = pay(client, "meal-pack-5")

    assert r.status_code == 200 and "your payment is confirmed" in r.text
    u = user()
    assert (u.plan_meal_credits, u.addon_meal_credits, u.meal_credits) == (20, 5, 25)
    assert count(Subscription) == 1  # a pack never starts a subscription


def test_second_plan_checkout_is_refused_while_subscribed(client, auth):
    auth.register()
    pay(client, "lunch-monthly")
    assert "already have a meal plan" in client.get("/plans/family-monthly").text
    r = client.post("/checkout/family-monthly", data={"gateway": "test", "checkout_token": "t1"})
    assert r.status_code == 409 and "ALREADY_SUBSCRIBED" in r.text
    assert count(Order) == 1


def test_double_submitted_checkout_form_opens_one_order(client, auth):
    auth.register()
    page = client.get("/plans/lunch-monthly")
    from tests.conftest import form_token
    data = {"gateway": "test", "checkout_token": form_token(page.text, "checkout_token")}
    first = client.post("/checkout/lunch-monthly", data=data)
    second = client.post("/checkout/lunch-monthly", data=data)
    assert first.status_code == second.status_code == 303
    assert first.location == second.location
    assert count(Order) == 1


def test_cancel_link_marks_pending_order_canceled(client, auth):
    auth.register()
    start_checkout(client)
    order = db.session.scalars(sa.select(Order)).one()
    r = client.get(f"/checkout/cancel/{order.reference}")
    assert r.status_code == 200 and "not been charged" in r.text
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "canceled"


def test_unknown_plan_and_gateway_have_specific_codes(client, auth):
    auth.register()
    assert "PLAN_NOT_FOUND" in client.get("/plans/nope").text
    r = start_checkout(client, gateway="bitcoin")
    assert r.status_code == 404 and "GATEWAY_NOT_CONFIGURED" in r.text
    assert count(Order) == 0


def test_inactive_plan_is_not_sold(client, auth):
    from tests.conftest import plan
    auth.register()
    p = plan("family-monthly")
    p.is_active = False
    db.session.commit()
    r = client.get("/plans/family-monthly")
    assert r.status_code == 410 and "PLAN_INACTIVE" in r.text
    assert "Family Dinner" not in client.get("/").text


def test_checkout_requires_login(client):
    r = client.post("/checkout/lunch-monthly", data={"gateway": "test", "checkout_token": "x"})
    assert r.status_code == 302 and "/login" in r.location
    assert count(Order) == 0


def test_success_page_for_abandoned_checkout_says_nothing_was_received(client, auth):
    auth.register()
    start_checkout(client)
    order = db.session.scalars(sa.select(Order)).one()

    r = client.get(f"/checkout/success/{order.reference}")

    assert r.status_code == 402 and "PAYMENT_AWAITING_SHOPPER" in r.text
    assert 'http-equiv="refresh"' not in r.text
    assert "No need to pay again" not in r.text
    assert f'href="/checkout/continue/{order.reference}"' in r.text


def test_success_page_for_authorised_order_waits_and_refreshes(client, auth):
    auth.register()
    start_checkout(client)
    order = db.session.scalars(sa.select(Order)).one()
    order.authorized_at = order.created_at
    db.session.commit()

    r = client.get(f"/checkout/success/{order.reference}")

    assert r.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in r.text
    assert f'<meta http-equiv="refresh" content="5; url=/checkout/success/{order.reference}">' in r.text
    assert "No need to pay again" in r.text


def test_success_page_for_order_in_review_names_the_problem(client, auth):
    auth.register()
    start_checkout(client)
    order = db.session.scalars(sa.select(Order)).one()
    order.status, order.failure_code = "needs_review", "PAYMENT_AMOUNT_MISMATCH"
    db.session.commit()

    r = client.get(f"/checkout/success/{order.reference}")

    assert r.status_code == 409 and "PAYMENT_AMOUNT_MISMATCH" in r.text
    assert "REF-" in r.text  # a support reference to quote
