"""Plan change at "Razorpay": scheduled for the cycle end, applied by the renewal that starts it."""
import sqlalchemy as sa

from app.extensions import db
from app.models import NotificationOutbox, Order
from app.money import format_money
from tests.conftest import plan, user
from tests.razorpay.test_subscriptions import _activate, _at, _subscription
from tests.test_plan_change import _date, _text


def test_preview_says_the_change_applies_at_cycle_end_with_the_date(app, shop, razorpay_fake,
                                                                    synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)
    cycle_end = _date(app, _at(razorpay_fake.subscriptions[sub_id]["current_end"]))

    page = shop.client.get("/account/subscription/change?plan=family-monthly")

    assert page.status_code == 200
    charge = _text(page.text, "plan-change-charge")
    assert "Nothing is charged now" in charge
    assert f"From {cycle_end} you pay {format_money(549900, 'INR')} per month" in charge
    assert f"On {cycle_end}, when your current period ends" in _text(page.text, "plan-change-when")
    assert f"stay at 20 until {cycle_end}; then you get 40" in \
        _text(page.text, "plan-change-credits")
    assert razorpay_fake.calls("PATCH", r"/v1/subscriptions/.+") == []


def test_change_is_scheduled_at_razorpay_then_applied_by_the_renewal(app, shop, razorpay_fake,
                                                                     synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)

    r = shop.client.post("/account/subscription/change", data={"plan": "family-monthly"})

    assert r.status_code == 303
    [edit] = razorpay_fake.calls("PATCH", rf"/v1/subscriptions/{sub_id}")
    assert edit["json"] == {"plan_id": plan("family-monthly").razorpay_plan_id,
                            "schedule_change_at": "cycle_end"}
    sub = _subscription()
    assert sub.meal_plan.slug == "lunch-monthly" and sub.scheduled_meal_plan.slug == "family-monthly"
    assert user().plan_meal_credits == 20
    account = shop.client.get("/account/").text
    assert 'data-testid="scheduled-plan-change"' in account
    assert "Family Dinner" in _text(account, "scheduled-plan-change")
    [mail] = db.session.scalars(sa.select(NotificationOutbox).where(
        NotificationOutbox.kind == "plan_changed")).all()
    assert _date(app, sub.current_period_end) in mail.subject
    assert format_money(549900, "INR") in mail.body_text

    renewal = razorpay_fake.charge_subscription(sub_id)
    shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                 payment=renewal)

    sub = _subscription()
    assert sub.meal_plan.slug == "family-monthly" and sub.scheduled_meal_plan_id is None
    assert user().plan_meal_credits == 40
    order = db.session.scalars(sa.select(Order).where(Order.kind == "renewal")).one()
    assert (order.amount_minor, order.meal_plan.slug) == (549900, "family-monthly")
