"""Razorpay payments that match no order or subscription of ours are held, never granted."""
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, NotificationOutbox, Order, Subscription
from tests.conftest import count, user
from tests.razorpay.conftest import order_row


def _forget(gateway_order_id):
    """Our row is gone (a restore, a lost commit): the gateway still holds the payment."""
    pending = order_row(gateway_order_id)
    db.session.execute(sa.delete(AuditLogEntry).where(AuditLogEntry.order_id == pending.id))
    db.session.delete(pending)
    db.session.commit()


def test_subscription_charge_for_a_subscription_we_do_not_hold_is_held(shop, razorpay_fake,
                                                                        synced_plans, runner):
    sub_id, _ = shop.start("lunch-monthly")
    _forget(sub_id)
    payment = razorpay_fake.charge_subscription(sub_id)

    r = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                     payment=payment)
    again = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                         payment=payment)

    assert r.status_code == again.status_code == 200 and r.json["status"] == "processed"
    held = order_row(sub_id)
    assert held.status == "needs_review" and held.failure_code == "PAYMENT_UNMATCHED"
    assert held.gateway_payment_id == payment["id"] and count(Order) == 1
    assert count(Subscription) == 0 and count(CreditLedgerEntry) == 0
    assert user().plan_meal_credits == 0 and count(NotificationOutbox) == 0
    assert runner.invoke(args=["monitor", "check"]).exit_code == 2


def test_captured_payment_of_an_unknown_order_naming_nobody_grants_nothing(shop, razorpay_fake):
    order_id, _ = shop.start()
    _forget(order_id)
    payment = razorpay_fake.pay_order(order_id)  # no notes of ours on the payment

    r = shop.webhook("payment.captured", payment=payment)

    assert r.status_code == 200 and count(Order) == 0 and count(CreditLedgerEntry) == 0
    assert count(AuditLogEntry, AuditLogEntry.action == "payment_unmatched") == 1
