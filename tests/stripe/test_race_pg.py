"""The return redirect and checkout.session.completed racing, on PostgreSQL, in real threads."""
import threading

import sqlalchemy as sa

from app.extensions import db
from app.models import CreditLedgerEntry, NotificationOutbox, Order, Subscription, User
from tests.conftest import count
from tests.fakes.stripe import post_event
from tests.flows import start_checkout
from tests.stripe.conftest import WEBHOOK_SECRET

ROUNDS = 6


def _shopper(app, n):
    client = app.test_client()
    email = f"racer{n}@example.com"
    # A fresh app context: the fixture's one caches the previous shopper in flask.g.
    with app.app_context():
        client.post("/register", data={"name": f"Racer {n}", "email": email,
                                       "password": "correct horse 1", "confirm": "correct horse 1"})
        assert start_checkout(client, gateway="stripe").status_code == 303
    order = db.session.scalars(sa.select(Order).join(User).where(User.email == email)).one()
    return client, order


def test_redirect_and_webhook_race_fulfil_once(pg_only, app, fake_stripe):
    for n in range(ROUNDS):
        shopper, order = _shopper(app, n)
        session = fake_stripe.complete_session(order.gateway_order_id)
        event = fake_stripe.event("checkout.session.completed", session)
        barrier = threading.Barrier(2)
        results, errors = {}, []

        def redirect():
            try:
                barrier.wait(timeout=10)
                results["redirect"] = shopper.get(
                    f"/checkout/stripe/return?session_id={session['id']}").status_code
            except Exception as exc:  # surfaced below; a thread must not swallow it
                errors.append(exc)

        def webhook():
            try:
                hook_client = app.test_client()
                barrier.wait(timeout=10)
                r = post_event(hook_client, event, WEBHOOK_SECRET)
                results["webhook"] = (r.status_code, r.json["status"])
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=redirect), threading.Thread(target=webhook)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

        assert not errors, errors
        assert results == {"redirect": 303, "webhook": (200, "processed")}, results
        db.session.expire_all()
        user_id = order.user_id
        assert count(Order, Order.user_id == user_id, Order.status == "paid") == 1
        assert count(Order, Order.user_id == user_id) == 1
        assert count(Subscription, Subscription.user_id == user_id) == 1
        assert count(CreditLedgerEntry, CreditLedgerEntry.user_id == user_id) == 1
        assert db.session.get(User, user_id).plan_meal_credits == 20
        assert count(NotificationOutbox, NotificationOutbox.user_id == user_id,
                     NotificationOutbox.kind == "payment_confirmed") == 1
