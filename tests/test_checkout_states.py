"""What the checkout pages say about an unfinished payment (issue 14, parts 1-3, 5, 6):
the cancel page, the pending page's three states and its gateway check, checkout
expiry, the account page's unfinished checkouts, and the test gateway's page."""
import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
import time_machine

from app.errors import TiffinError
from app.extensions import db
from app.gateways.test import OUTCOME_NO_REDIRECT, OUTCOME_NO_WEBHOOK, TestGateway
from app.models import Order, Subscription, TestGatewayPayment, User
from app.services.checkout import check_order
from tests.conftest import count, form_token, user
from tests.flows import gateway_page, pay


def _order() -> Order:
    db.session.expire_all()
    return db.session.scalars(sa.select(Order).order_by(Order.id.desc())).first()


def _paid_at_gateway_but_nothing_arrived(client, slug="lunch-monthly") -> Order:
    """Pay on the test gateway with the webhook lost, and never follow the redirect."""
    path = gateway_page(client, slug)
    r = client.post(path, data={"outcome": OUTCOME_NO_WEBHOOK})
    assert r.status_code == 303 and "/payments/test/return" in r.location
    order = _order()
    assert order.status == "pending"
    return order


@pytest.fixture
def lookups(monkeypatch):
    """Count the test gateway's lookups (the pending page's questions)."""
    calls = []
    real = TestGateway.lookup_payment

    def counted(self, order):
        calls.append(order.reference)
        return real(self, order)

    monkeypatch.setattr(TestGateway, "lookup_payment", counted)
    return calls


@pytest.fixture
def gateway_down(monkeypatch):
    def unreachable(self, order):
        raise TiffinError("GATEWAY_UNAVAILABLE", "test: gateway down")

    monkeypatch.setattr(TestGateway, "lookup_payment", unreachable)


# --- 1. the cancel page -----------------------------------------------------------
def test_cancel_return_for_a_pending_order_marks_it_cancelled_and_says_not_charged(client, auth):
    auth.register()
    gateway_page(client)
    order = _order()

    r = client.get(f"/checkout/cancel/{order.reference}")

    assert r.status_code == 200
    assert "Checkout cancelled" in r.text and "you have not been charged" in r.text
    assert _order().status == "canceled"


def test_cancel_return_for_a_paid_order_shows_its_success_page(client, auth):
    auth.register()
    pay(client)
    order = _order()
    assert order.status == "paid"

    r = client.get(f"/checkout/cancel/{order.reference}")

    assert r.status_code == 303 and r.location == f"/checkout/success/{order.reference}"
    assert _order().status == "paid"
    page = client.get(r.location)
    assert page.status_code == 200 and "your payment is confirmed" in page.text
    assert "not been charged" not in page.text


def test_cancel_return_for_an_authorised_order_leaves_it_alone(client, auth):
    auth.register()
    gateway_page(client)
    order = _order()
    order.authorized_at = datetime.now(timezone.utc)
    db.session.commit()

    r = client.get(f"/checkout/cancel/{order.reference}")

    assert r.status_code == 303 and r.location == f"/checkout/success/{order.reference}"
    assert _order().status == "pending"
    page = client.get(r.location)
    assert page.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in page.text


def test_cancel_return_after_paying_with_the_webhook_lost_fulfils_instead_of_cancelling(
        client, auth):
    auth.register()
    order = _paid_at_gateway_but_nothing_arrived(client)

    r = client.get(f"/checkout/cancel/{order.reference}")

    assert r.status_code == 303 and r.location == f"/checkout/success/{order.reference}"
    assert _order().status == "paid"
    assert count(Subscription) == 1


# --- 2. the pending page ----------------------------------------------------------
def test_abandoned_checkout_waits_for_the_shopper_with_a_way_back_to_the_payment_page(
        client, auth):
    auth.register()
    path = gateway_page(client)
    order = _order()

    r = client.get(f"/checkout/success/{order.reference}")

    assert r.status_code == 402
    assert 'data-testid="error-code">PAYMENT_AWAITING_SHOPPER<' in r.text
    assert "have not received a payment" in r.text and "not been charged" in r.text
    assert "No need to pay again" not in r.text and "has been received" not in r.text
    assert 'http-equiv="refresh"' not in r.text
    assert 'data-testid="continue-payment"' in r.text and 'data-testid="try-again"' in r.text
    assert 'data-testid="support-ref"' in r.text
    back = client.get(f"/checkout/continue/{order.reference}")
    assert back.status_code == 303 and back.location == path


def test_payment_the_gateway_holds_is_confirming_and_refreshes(client, auth):
    auth.register()
    gateway_page(client)
    order = _order()
    order.authorized_at = datetime.now(timezone.utc)
    db.session.commit()

    r = client.get(f"/checkout/success/{order.reference}")

    assert r.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in r.text
    assert "Your payment has been received" in r.text and "No need to pay again" in r.text
    assert f'content="5; url=/checkout/success/{order.reference}"' in r.text


def test_gateway_that_cannot_be_asked_is_said_plainly_and_the_page_refreshes(
        client, auth, gateway_down):
    auth.register()
    gateway_page(client)
    order = _order()

    r = client.get(f"/checkout/success/{order.reference}")

    assert r.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in r.text
    assert "could not reach the payment provider yet" in r.text
    assert "Your payment has been received" not in r.text
    assert f'content="5; url=/checkout/success/{order.reference}"' in r.text
    assert _order().gateway_said == "unreachable"


def test_pending_page_stops_refreshing_after_a_bounded_time_with_a_next_step(
        client, auth, gateway_down):
    auth.register()
    gateway_page(client)
    order = _order()
    with time_machine.travel(datetime.now(timezone.utc), tick=False) as clock:
        first = client.get(f"/checkout/success/{order.reference}")
        assert 'http-equiv="refresh"' in first.text
        clock.shift(timedelta(minutes=4))
        assert 'http-equiv="refresh"' in client.get(f"/checkout/success/{order.reference}").text

        clock.shift(timedelta(minutes=2))
        later = client.get(f"/checkout/success/{order.reference}")

    assert later.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in later.text
    assert 'http-equiv="refresh"' not in later.text
    assert 'data-testid="refresh-stopped"' in later.text and "stopped checking" in later.text
    assert 'data-testid="support-ref"' in later.text and "REF-" in later.text
    assert 'data-testid="check-again"' in later.text


def test_lost_webhook_and_lost_redirect_the_pending_page_asks_the_gateway_and_fulfils(
        client, auth):
    auth.register()
    order = _paid_at_gateway_but_nothing_arrived(client)

    r = client.get(f"/checkout/success/{order.reference}")

    assert r.status_code == 200 and "your payment is confirmed" in r.text
    order = _order()
    assert order.status == "paid" and order.gateway_payment_id.startswith("tgp_")
    assert count(Subscription) == 1
    assert user().meal_credits == 20


def test_status_poll_asks_the_gateway_too(client, auth):
    auth.register()
    order = _paid_at_gateway_but_nothing_arrived(client)

    r = client.get(f"/checkout/status/{order.reference}")

    assert r.status_code == 200
    assert r.json == {"reference": order.reference, "status": "paid", "state": "paid"}
    assert count(Subscription) == 1


def test_gateway_is_asked_at_most_once_every_30_seconds_per_order(client, auth, lookups):
    auth.register()
    gateway_page(client)
    order = _order()
    with time_machine.travel(datetime.now(timezone.utc), tick=False) as clock:
        client.get(f"/checkout/success/{order.reference}")
        client.get(f"/checkout/status/{order.reference}")
        clock.shift(timedelta(seconds=29))
        client.get(f"/checkout/success/{order.reference}")
        assert lookups == [order.reference]

        clock.shift(timedelta(seconds=2))
        client.get(f"/checkout/status/{order.reference}")
    assert lookups == [order.reference, order.reference]
    assert _order().gateway_checked_at is not None


def test_paid_order_is_never_asked_about(client, auth, lookups):
    auth.register()
    pay(client)
    order = _order()
    client.get(f"/checkout/success/{order.reference}")
    client.get(f"/checkout/status/{order.reference}")
    assert lookups == []


# --- 3. checkouts expire ----------------------------------------------------------
def test_checkout_gets_a_lifetime_from_config(app, client, auth):
    app.config["CHECKOUT_EXPIRY_MINUTES"] = 45
    auth.register()
    before = datetime.now(timezone.utc)
    gateway_page(client)
    order = _order()
    assert before + timedelta(minutes=45) <= order.checkout_expires_at \
        <= datetime.now(timezone.utc) + timedelta(minutes=45)


def test_expired_checkout_shows_not_completed_and_not_charged(client, auth):
    auth.register()
    path = gateway_page(client)
    order = _order()
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(minutes=61), tick=False):
        account = client.get("/account/")
        page = client.get(f"/checkout/success/{order.reference}")
        gateway = client.get(path)
        submit = client.post(path, data={"outcome": "pay"})
        back = client.get(f"/checkout/continue/{order.reference}")

    assert "Not completed — not charged" in account.text
    assert 'data-state="expired"' in account.text
    assert page.status_code == 402 and "PAYMENT_NOT_COMPLETED" in page.text
    assert "Not completed — you were not charged" in page.text
    assert "Continue to payment" not in page.text
    order = _order()
    assert order.status == "canceled" and order.failure_code == "checkout_expired"
    assert gateway.status_code == 410 and "This checkout has expired" in gateway.text
    assert submit.status_code == 410 and count(TestGatewayPayment) == 0
    assert back.status_code == 303 and back.location == f"/checkout/success/{order.reference}"
    assert count(Subscription) == 0


def test_before_expiry_the_checkout_is_waiting_for_payment_with_a_way_to_continue(
        client, auth):
    auth.register()
    path = gateway_page(client)
    order = _order()
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(minutes=59), tick=False):
        account = client.get("/account/")
        gateway = client.get(path)

    assert 'data-testid="checkouts"' in account.text
    assert "Waiting for payment" in account.text and 'data-state="waiting"' in account.text
    assert f'href="/checkout/continue/{order.reference}"' in account.text
    assert gateway.status_code == 200 and "Submit payment" in gateway.text


def test_account_lists_unfinished_checkouts_apart_from_orders(client, auth):
    auth.register()
    pay(client)
    paid = _order()
    gateway_page(client, "meal-pack-5")
    waiting = _order()

    page = client.get("/account/").text

    orders_table = page[page.index("<h2>Orders</h2>"):page.index('data-testid="checkouts"')]
    checkouts = page[page.index('data-testid="checkouts"'):]
    assert paid.reference in orders_table and waiting.reference not in orders_table
    assert waiting.reference in checkouts and paid.reference not in checkouts
    assert "Waiting for payment" in checkouts


def test_late_payment_for_an_expired_checkout_is_still_honoured(app, client, auth):
    auth.register()
    path = gateway_page(client)
    order = _order()
    session = app.extensions["tiffin_gateways"]["test"].load_session(path.rsplit("/", 1)[1])
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(minutes=90), tick=False):
        client.get(f"/checkout/success/{order.reference}")  # closes the checkout
        assert _order().status == "canceled"
        gateway = app.extensions["tiffin_gateways"]["test"]
        body = gateway.build_event(session, "payment.succeeded", payment_id="tgp_late")
        r = client.post("/webhooks/test", data=body,
                        headers={"X-Test-Gateway-Signature": gateway.sign_body(body),
                                 "Content-Type": "application/json"})
        page = client.get(f"/checkout/success/{order.reference}")

    assert r.status_code == 200
    order = _order()
    assert order.status == "paid" and order.gateway_payment_id == "tgp_late"
    assert page.status_code == 200 and "your payment is confirmed" in page.text
    assert user().meal_credits == 20


def test_two_tabs_for_the_same_pack_stay_two_checkouts(client, auth):
    auth.register()
    tab1 = form_token(client.get("/plans/meal-pack-5").text, "checkout_token")
    tab2 = form_token(client.get("/plans/meal-pack-5").text, "checkout_token")
    first = client.post("/checkout/meal-pack-5", data={"gateway": "test", "checkout_token": tab1})
    second = client.post("/checkout/meal-pack-5", data={"gateway": "test", "checkout_token": tab2})

    assert first.location != second.location
    assert count(Order, Order.status == "pending") == 2
    for r in (first, second):  # each tab pays its own checkout (its webhook fulfils it)
        assert client.post(r.location, data={"outcome": "pay"}).status_code == 303
    assert count(Order, Order.status == "paid") == 2
    assert user().addon_meal_credits == 10


# --- 5. signed in stays signed in ---------------------------------------------------
def _in_own_thread(fn):
    """Run a request as a server does: in a thread with no application context yet
    (the test's own context would otherwise be shared by every request)."""
    result = []
    worker = threading.Thread(target=lambda: result.append(fn()))
    worker.start()
    worker.join()
    return result[0]


def test_redirect_lost_page_and_the_next_page_show_the_shopper_signed_in(client, auth):
    auth.register()
    path = gateway_page(client)
    r = _in_own_thread(lambda: client.post(path, data={"outcome": OUTCOME_NO_REDIRECT}))

    assert r.status_code == 200 and "redirect back to the shop was" in r.text
    assert "Sign out" in r.text and ">Sign in<" not in r.text
    account = _in_own_thread(lambda: client.get("/account/"))
    assert account.status_code == 200 and "Sign out" in account.text
    assert ">Sign in<" not in account.text
    assert _order().status == "paid"


# --- 6. the test gateway's page ---------------------------------------------------
def test_gateway_page_offers_cancel_and_return_to_the_shop(client, auth):
    auth.register()
    path = gateway_page(client)
    order = _order()

    page = client.get(path).text

    assert "Cancel and return to the shop" in page
    assert f'href="/checkout/cancel/{order.reference}"' in page
    assert 'class="decline-reason"' in page


def test_paid_session_shows_its_outcome_and_takes_no_second_payment(client, auth):
    auth.register()
    path = gateway_page(client)
    assert client.post(path, data={"outcome": "pay"}).status_code == 303

    again = client.get(path)
    second = client.post(path, data={"outcome": "pay"})

    assert again.status_code == 200 and "already been made" in again.text
    assert "Submit payment" not in again.text
    assert second.status_code == 409 and "already been made" in second.text
    assert count(TestGatewayPayment) == 1
    assert count(Order, Order.status == "paid") == 1 and user().meal_credits == 20


def test_declined_session_shows_its_outcome_and_takes_no_second_submission(client, auth):
    auth.register()
    path = gateway_page(client)
    client.post(path, data={"outcome": "decline", "reason": "expired_card"})

    again = client.get(path)
    second = client.post(path, data={"outcome": "pay"})

    assert again.status_code == 200 and "declined" in again.text
    assert "Your card has expired." in again.text
    assert second.status_code == 409
    assert _order().status == "failed" and count(Subscription) == 0


def test_expired_checkouts_are_closed_by_the_cli_and_the_account_page(client, auth, runner):
    auth.register()
    gateway_page(client)
    first = _order()
    gateway_page(client, "meal-pack-5")
    confirming = _order()
    confirming.authorized_at = datetime.now(timezone.utc)
    db.session.commit()
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(minutes=61), tick=False):
        result = runner.invoke(args=["orders", "expire-checkouts"])
        gateway_page(client)
        fresh = _order()
    assert result.exit_code == 0 and "Closed 1 expired checkout(s)" in result.output
    db.session.expire_all()
    assert db.session.get(Order, first.id).status == "canceled"
    assert db.session.get(Order, first.id).failure_code == "checkout_expired"
    assert db.session.get(Order, confirming.id).status == "pending"  # money may have moved
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(minutes=200), tick=False):
        page = client.get("/account/").text
    assert db.session.get(Order, fresh.id).status == "canceled"
    assert page.count("Not completed — not charged") == 2
    assert "Payment received — confirming" in page


# --- across workers (PostgreSQL, real threads) -------------------------------------
def test_concurrent_pending_pages_ask_the_gateway_once_and_fulfil_once(pg_only, app, client, auth,
                                                                       lookups):
    auth.register()
    order = _paid_at_gateway_but_nothing_arrived(client)
    user_id, reference = order.user_id, order.reference
    db.session.remove()
    barrier, errors = threading.Barrier(6), []

    def look():
        with app.app_context():
            try:
                shopper = db.session.get(User, user_id)
                barrier.wait()
                check_order(shopper, reference)
            except Exception as exc:  # surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=look) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert lookups == [reference]  # one question to the gateway, whoever won
    assert _order().status == "paid" and count(Subscription) == 1
    assert user().meal_credits == 20
