"""A paid Checkout Session we hold no order for is held for review, never granted."""
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, NotificationOutbox, Order, Subscription
from tests.conftest import count, user
from tests.stripe.helpers import deliver, paid_session, subscribe


def test_paid_session_of_no_order_of_ours_does_not_extend_a_live_plan(client, auth, runner,
                                                                      fake_stripe):
    auth.register()
    _, _, sub = subscribe(client, fake_stripe)
    period_end, credits, emails = sub.current_period_end, user().plan_meal_credits, \
        count(NotificationOutbox)
    stray = fake_stripe.create_session({
        "mode": "subscription", "line_items": [{"price": "price_lunch", "quantity": "1"}],
        "metadata": {"user_id": str(user().id), "plan_id": str(sub.meal_plan_id)},
        "success_url": "x", "cancel_url": "y"})
    fake_stripe.complete_session(stray["id"])

    r, _ = deliver(client, fake_stripe, "checkout.session.completed", stray)

    assert r.status_code == 200 and r.json["status"] == "processed"
    db.session.expire_all()
    assert db.session.get(Subscription, sub.id).current_period_end == period_end
    assert user().plan_meal_credits == credits and count(NotificationOutbox) == emails
    assert count(Subscription) == 1 and count(CreditLedgerEntry) == 1
    held = db.session.scalars(sa.select(Order).where(Order.gateway_order_id == stray["id"])).one()
    assert held.status == "needs_review" and held.failure_code == "PAYMENT_UNMATCHED"
    assert runner.invoke(args=["monitor", "check"]).exit_code == 2


def test_a_paid_session_of_our_own_order_still_fulfils(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe, "meal-pack-5")

    r, _ = deliver(client, fake_stripe, "checkout.session.completed", session)

    assert r.status_code == 200 and user().addon_meal_credits == 5
    assert count(AuditLogEntry, AuditLogEntry.action == "payment_unmatched") == 0
