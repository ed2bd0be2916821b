"""Meal plans on Razorpay Subscriptions: activation, renewals and every subscription event."""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from app.extensions import db
from app.models import CreditLedgerEntry, MealPlan, NotificationOutbox, Order, Subscription, User
from app.services.access import has_access
from tests.conftest import count, user


def _at(ts):
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _subscription() -> Subscription:
    db.session.expire_all()
    return db.session.scalars(sa.select(Subscription)).one()


def _activate(shop, fake):
    """Checkout with subscription_id, the authentication charge, and the signed callback."""
    sub_id, posted = shop.start("lunch-monthly")
    assert sub_id.startswith("sub_") and posted == sub_id
    payment = fake.charge_subscription(sub_id)
    r = shop.verify_subscription(sub_id, payment["id"], follow=True)
    assert r.status_code == 200 and "your payment is confirmed" in r.text
    return sub_id, payment


def test_checkout_creates_a_razorpay_subscription_for_the_plan(shop, razorpay_fake, synced_plans):
    page = shop.checkout_page("lunch-monthly")

    assert page.status_code == 200
    created = razorpay_fake.calls("POST", "/v1/subscriptions")[0]["json"]
    plan = db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == "lunch-monthly")).one()
    assert created["plan_id"] == plan.razorpay_plan_id and created["total_count"] == 120
    assert created["notes"]["user_id"] == str(user().id)
    assert "data-subscription-id=\"sub_" in page.text and "data-order-id" not in page.text
    assert razorpay_fake.calls("POST", "/v1/orders") == []


def test_activation_callback_fulfils_with_razorpay_period(shop, razorpay_fake, synced_plans):
    sub_id, payment = _activate(shop, razorpay_fake)

    sub = _subscription()
    remote = razorpay_fake.subscriptions[sub_id]
    assert sub.gateway == "razorpay" and sub.gateway_subscription_id == sub_id
    assert sub.status == "active" and sub.current_period_end == _at(remote["current_end"])
    order = db.session.scalars(sa.select(Order)).one()
    assert order.gateway_order_id == sub_id and order.gateway_payment_id == payment["id"]
    assert user().plan_meal_credits == 20 and user().subscription_status == "active"


def test_bad_subscription_signature_is_400(shop, razorpay_fake, synced_plans):
    sub_id, _ = shop.start("lunch-monthly")
    payment = razorpay_fake.charge_subscription(sub_id)
    # Signed the way one-time orders are (order|payment): wrong for a subscription.
    wrong = razorpay_fake.checkout_signature(sub_id, payment["id"])

    r = shop.verify_subscription(sub_id, payment["id"], signature=wrong)

    assert r.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in r.text
    assert count(Subscription) == 0


def test_first_subscription_charged_is_the_activation_not_a_second_grant(shop, razorpay_fake,
                                                                          synced_plans):
    sub_id, payment = _activate(shop, razorpay_fake)
    db.session.execute(sa.update(User).values(plan_meal_credits=7))
    db.session.commit()

    r = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                     payment=payment)

    assert r.status_code == 200
    assert count(Order) == 1 and count(Subscription) == 1 and count(CreditLedgerEntry) == 1
    assert user().plan_meal_credits == 7  # nothing granted again


def test_charged_webhook_before_callback_activates_once(shop, razorpay_fake, synced_plans):
    sub_id, _ = shop.start("lunch-monthly")
    payment = razorpay_fake.charge_subscription(sub_id)

    shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                 payment=payment)
    shop.webhook("payment.captured", payment=payment)  # an invoice payment: not ours to fulfil
    r = shop.verify_subscription(sub_id, payment["id"], follow=True)

    assert r.status_code == 200 and "your payment is confirmed" in r.text
    assert _subscription().gateway_subscription_id == sub_id
    assert count(Order) == 1 and count(CreditLedgerEntry) == 1 and user().plan_meal_credits == 20


def test_renewal_charge_resets_meal_credits_and_extends_the_period(shop, razorpay_fake,
                                                                   synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)
    db.session.execute(sa.update(User).values(plan_meal_credits=2))
    db.session.commit()

    renewal = razorpay_fake.charge_subscription(sub_id)
    r = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                     payment=renewal)
    again = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                         payment=renewal)

    assert r.status_code == again.status_code == 200
    sub = _subscription()
    assert sub.current_period_end == _at(razorpay_fake.subscriptions[sub_id]["current_end"])
    order = db.session.scalars(sa.select(Order).where(Order.kind == "renewal")).one()
    assert order.gateway_payment_id == renewal["id"] and order.status == "paid"
    assert order.gateway_order_id == renewal["order_id"]
    assert user().plan_meal_credits == 20 and count(Order) == 2
    assert count(NotificationOutbox, NotificationOutbox.kind == "renewal") == 1


def test_pending_gives_grace_then_halted_takes_access(shop, razorpay_fake, synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)

    pending = razorpay_fake.set_subscription_status(sub_id, "pending")
    shop.webhook("subscription.pending", subscription=pending)
    sub = _subscription()
    assert sub.status == "past_due" and sub.grace_period_ends_at is not None
    assert sub.grace_period_ends_at - datetime.now(timezone.utc) > timedelta(days=2)
    assert has_access(sub) and user().subscription_status == "past_due"
    assert count(NotificationOutbox, NotificationOutbox.kind == "payment_failed") == 1

    halted = razorpay_fake.set_subscription_status(sub_id, "halted")
    shop.webhook("subscription.halted", subscription=halted)
    sub = _subscription()
    assert sub.status == "unpaid" and not has_access(sub)
    assert user().subscription_status == "unpaid"

    # A retry finally succeeds: Razorpay reactivates it and charges the period.
    renewal = razorpay_fake.charge_subscription(sub_id)
    shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                 payment=renewal)
    sub = _subscription()
    assert sub.status == "active" and has_access(sub) and sub.grace_period_ends_at is None
    assert count(Subscription) == 1 and user().plan_meal_credits == 20


def test_cancelled_ends_the_subscription(shop, razorpay_fake, synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)

    r = shop.webhook("subscription.cancelled",
                     subscription=razorpay_fake.set_subscription_status(sub_id, "cancelled"))

    assert r.status_code == 200
    sub = _subscription()
    assert sub.status == "canceled" and sub.canceled_at is not None
    assert user().subscription_status == "canceled"


def test_completed_ends_the_subscription(shop, razorpay_fake, synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)

    shop.webhook("subscription.completed",
                 subscription=razorpay_fake.set_subscription_status(sub_id, "completed"))

    sub = _subscription()
    assert sub.status == "completed" and not has_access(sub)
    assert user().subscription_status == "completed"


def test_events_for_an_unknown_subscription_are_acknowledged(shop, razorpay_fake, synced_plans):
    sub_id, _ = shop.start("lunch-monthly")

    r = shop.webhook("subscription.halted",
                     subscription=razorpay_fake.set_subscription_status(sub_id, "halted"))

    assert r.status_code == 200 and count(Subscription) == 0


def test_plan_without_razorpay_plan_id_cannot_start(shop, razorpay_fake):
    r = shop.checkout_page("lunch-monthly")

    assert r.status_code == 404 and "GATEWAY_NOT_CONFIGURED" in r.text
    assert razorpay_fake.calls("POST", "/v1/subscriptions") == []
    assert db.session.scalars(sa.select(Order)).one().status == "failed"


def test_cancel_from_account_cancels_at_razorpay_first(shop, razorpay_fake, synced_plans):
    from app.services.subscriptions import cancel_at_period_end

    sub_id, _ = _activate(shop, razorpay_fake)

    cancel_at_period_end(user())

    call = razorpay_fake.calls("POST", f"/v1/subscriptions/{sub_id}/cancel")
    assert [c["json"] for c in call] == [{"cancel_at_cycle_end": 1}]
    assert _subscription().cancel_at_period_end is True


def test_pending_older_than_a_renewal_delivered_late_changes_nothing(shop, razorpay_fake,
                                                                     synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)
    renewal = razorpay_fake.charge_subscription(sub_id)
    charged_at = renewal["created_at"]
    shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                 payment=renewal, created_at=charged_at)

    shop.webhook("subscription.pending", created_at=charged_at - 3600,
                 subscription=dict(razorpay_fake.subscriptions[sub_id], status="pending"))

    sub = _subscription()
    assert sub.status == "active" and sub.grace_period_ends_at is None
    assert count(NotificationOutbox, NotificationOutbox.kind == "payment_failed") == 0


def test_resume_after_cycle_end_cancel_is_refused_not_faked(shop, razorpay_fake, synced_plans):
    import pytest

    from app.errors import TiffinError
    from app.services.subscriptions import cancel_at_period_end, resume

    _activate(shop, razorpay_fake)
    cancel_at_period_end(user())

    with pytest.raises(TiffinError) as refused:
        resume(user())

    assert refused.value.code == "SUBSCRIPTION_CHANGE_UNSUPPORTED"
    db.session.rollback()
    assert _subscription().cancel_at_period_end is True
