"""Callback and payment.captured for one payment at the same moment, on PostgreSQL."""
import threading

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, NotificationOutbox, Order
from tests.conftest import count, user
from tests.razorpay.conftest import WEBHOOK_SECRET, order_row


def _race(callables):
    barrier = threading.Barrier(len(callables))
    results, errors = [None] * len(callables), []

    def worker(i, call):
        try:
            barrier.wait()
            results[i] = call()
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(callables)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def _logged_in_client(app):
    client = app.test_client()
    r = client.post("/login", data={"email": "asha@example.com", "password": "correct horse 1"})
    assert r.status_code == 302
    return client


def test_callbacks_and_webhooks_racing_fulfil_once(app, shop, razorpay_fake, pg_only):
    order_id, _ = shop.start("meal-pack-5")
    payment = razorpay_fake.pay_order(order_id)
    signature = razorpay_fake.checkout_signature(order_id, payment["id"])
    form = {"order_id": order_id, "razorpay_order_id": order_id,
            "razorpay_payment_id": payment["id"], "razorpay_signature": signature}
    callback_clients = [_logged_in_client(app) for _ in range(4)]
    webhooks = [razorpay_fake.webhook(kind, secret=WEBHOOK_SECRET, payment=payment,
                                      order=razorpay_fake.orders[order_id] if kind == "order.paid"
                                      else None)
                for kind in ("payment.captured", "order.paid", "payment.captured",
                             "payment.captured")]
    webhook_clients = [app.test_client() for _ in webhooks]

    calls = [lambda c=c: c.post("/payments/razorpay/verify", data=form)
             for c in callback_clients]
    calls += [lambda c=c, w=w: c.post("/webhooks/razorpay", data=w[0], headers=w[1])
              for c, w in zip(webhook_clients, webhooks)]
    results, errors = _race(calls)

    assert errors == []
    assert [r.status_code for r in results[:4]] == [303] * 4
    assert all(r.location.endswith(f"/checkout/success/{order_row(order_id).reference}")
               for r in results[:4])
    assert [r.status_code for r in results[4:]] == [200] * 4
    assert all(r.json["status"] == "processed" for r in results[4:])
    db.session.expire_all()
    assert count(Order) == 1 and order_row(order_id).status == "paid"
    assert count(CreditLedgerEntry) == 1 and user().addon_meal_credits == 5
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled") == 1
    assert count(NotificationOutbox, NotificationOutbox.kind == "payment_confirmed") == 1


def test_subscription_callback_and_first_charge_racing_activate_once(app, shop, razorpay_fake,
                                                                     synced_plans, pg_only):
    sub_id, _ = shop.start("lunch-monthly")
    payment = razorpay_fake.charge_subscription(sub_id)
    form = {"order_id": sub_id, "razorpay_subscription_id": sub_id,
            "razorpay_payment_id": payment["id"],
            "razorpay_signature": razorpay_fake.subscription_signature(payment["id"], sub_id)}
    callback_clients = [_logged_in_client(app) for _ in range(3)]
    hooks = [razorpay_fake.webhook("subscription.charged", secret=WEBHOOK_SECRET,
                                   subscription=razorpay_fake.subscriptions[sub_id],
                                   payment=payment) for _ in range(3)]
    hook_clients = [app.test_client() for _ in hooks]

    calls = [lambda c=c: c.post("/payments/razorpay/verify", data=form) for c in callback_clients]
    calls += [lambda c=c, h=h: c.post("/webhooks/razorpay", data=h[0], headers=h[1])
              for c, h in zip(hook_clients, hooks)]
    results, errors = _race(calls)

    assert errors == [] and [r.status_code for r in results] == [303] * 3 + [200] * 3
    db.session.expire_all()
    assert count(Order) == 1 and count(CreditLedgerEntry) == 1
    assert db.session.scalars(sa.select(Order)).one().gateway_payment_id == payment["id"]
    assert user().plan_meal_credits == 20


def test_double_click_racing_creates_one_razorpay_order(app, shop, razorpay_fake, pg_only):
    from tests.conftest import form_token

    page = shop.client.get("/plans/meal-pack-5").text
    data = {"gateway": "razorpay", "checkout_token": form_token(page, "checkout_token")}
    clients = [_logged_in_client(app) for _ in range(4)]

    results, errors = _race([lambda c=c: c.post("/checkout/meal-pack-5", data=data)
                             for c in clients])

    assert errors == []
    # The first submit opens the page; a copy racing it either re-renders the same
    # Razorpay order or (while it is still being created) says it is on its way.
    assert all(r.status_code in (200, 202) for r in results)
    assert any(r.status_code == 200 for r in results)
    assert len(razorpay_fake.calls("POST", "/v1/orders")) == 1
    db.session.expire_all()
    order = db.session.scalars(sa.select(Order)).one()
    assert all(f'data-order-id="{order.gateway_order_id}"' in r.text
               for r in results if r.status_code == 200)
