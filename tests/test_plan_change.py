"""Plan change on the test gateway: a preview with a price, and a dearer plan only once paid."""
import re

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import MealPlan, NotificationOutbox, Order, Subscription
from app.money import format_money
from tests.conftest import count, form_token, plan, user
from tests.flows import order_reference, pay
from tests.pipeline.conftest import SmtpSink, free_port


def _subscribe(client, auth, slug="lunch-monthly"):
    auth.register()
    page = pay(client, slug)
    assert "your payment is confirmed" in page.text
    return db.session.scalars(sa.select(Subscription)).one()


def _use_meals(n):
    u = user()
    u.plan_meal_credits -= n
    db.session.commit()


def _text(html: str, test_id: str) -> str:
    match = re.search(rf'data-testid="{test_id}"[^>]*>(.*?)</(?:dd|p|section)>', html, re.S)
    assert match, f"no {test_id} on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def _date(app, value) -> str:
    return app.jinja_env.filters["datefmt"](value)


def _plan_changed_mails():
    db.session.expire_all()
    return db.session.scalars(sa.select(NotificationOutbox).where(
        NotificationOutbox.kind == "plan_changed").order_by(NotificationOutbox.id)).all()


def _confirm(client, slug):
    """Open the preview and submit its form as the browser would."""
    preview = client.get(f"/account/subscription/change?plan={slug}")
    assert preview.status_code == 200, preview.text
    data = {"plan": form_token(preview.text, "plan")}
    if form_token(preview.text, "proration_date"):
        data["proration_date"] = form_token(preview.text, "proration_date")
    return client.post("/account/subscription/change", data=data)


def test_account_page_change_plan_leads_to_the_preview(app, client, auth):
    _subscribe(client, auth)
    page = client.get("/account/").text
    form = re.search(r'<form method="get" action="([^"]+)"[^>]*>.*?</form>', page, re.S)
    assert form and form.group(1) == "/account/subscription/change"
    assert 'name="plan"' in form.group(0) and "Change plan" in form.group(0)


def test_upgrade_preview_states_the_full_difference_now_and_the_credits(app, client, auth):
    sub = _subscribe(client, auth)
    _use_meals(5)

    page = client.get("/account/subscription/change?plan=family-monthly")

    assert page.status_code == 200
    assert "Family Dinner" in _text(page.text, "plan-change-new-plan")
    charge = _text(page.text, "plan-change-charge")
    assert format_money(250000, "INR") in charge and "full difference" in charge
    assert "not prorated" in charge and _date(app, sub.current_period_end) in charge
    assert "If it is declined, you keep Everyday Lunch" in _text(page.text, "plan-change-when")
    credits_line = _text(page.text, "plan-change-credits")
    assert "from 15 to 35 once the payment goes through" in credits_line
    assert 'action="/account/subscription/change"' in page.text
    assert form_token(page.text, "plan") == "family-monthly"
    assert f"Pay {format_money(250000, 'INR')} and change plan" in page.text


def test_upgrade_is_not_free_credits_arrive_only_after_the_difference_is_paid(app, client, auth,
                                                                             runner):
    sub = _subscribe(client, auth)
    period_end = sub.current_period_end
    _use_meals(5)

    r = _confirm(client, "family-monthly")

    assert r.status_code == 303 and r.location.startswith("/test-gateway/pay/")
    db.session.expire_all()
    assert db.session.get(Subscription, sub.id).meal_plan.slug == "lunch-monthly"
    assert user().plan_meal_credits == 15
    difference = db.session.scalars(sa.select(Order).where(Order.kind == "plan_change")).one()
    assert (difference.status, difference.amount_minor) == ("pending", 250000)
    assert difference.meal_plan_id == plan("family-monthly").id
    gateway_page = client.get(r.location)
    assert format_money(250000, "INR") in gateway_page.text

    paid = client.post(r.location, data={"outcome": "pay"}, follow_redirects=True)

    assert paid.status_code == 200 and order_reference(paid.text) == difference.reference
    assert "Change to Family Dinner (the price difference)" in paid.text
    db.session.expire_all()
    changed = db.session.get(Subscription, sub.id)
    assert changed.meal_plan.slug == "family-monthly" and changed.status == "active"
    assert changed.current_period_end == period_end  # the period stays; only the plan moved
    assert user().plan_meal_credits == 35  # 40 less the 5 used
    assert db.session.get(Order, difference.id).status == "paid"
    assert count(Subscription) == 1 and count(Order, Order.kind == "renewal") == 0
    [mail] = _plan_changed_mails()
    assert "Family Dinner" in mail.subject
    assert format_money(250000, "INR") in mail.body_text and difference.reference in mail.body_text
    assert "from 15 to 35" in mail.body_text
    assert count(NotificationOutbox, NotificationOutbox.kind == "payment_confirmed") == 1  # first buy
    healthy = runner.invoke(args=["monitor", "check"])  # nothing for an operator to chase
    assert healthy.exit_code == 0, healthy.output


def test_declined_difference_leaves_the_old_plan_and_credits(app, client, auth):
    sub = _subscribe(client, auth)
    r = _confirm(client, "family-monthly")

    declined = client.post(r.location, data={"outcome": "decline", "reason": "card_declined"},
                           follow_redirects=True)

    assert declined.status_code == 402 and "PAYMENT_DECLINED" in declined.text
    assert 'data-testid="try-again"' not in declined.text  # the plan page would sell a 2nd plan
    assert 'href="/account/"' in declined.text
    db.session.expire_all()
    assert db.session.get(Subscription, sub.id).meal_plan.slug == "lunch-monthly"
    assert user().plan_meal_credits == 20
    assert db.session.scalars(sa.select(Order.status).where(Order.kind == "plan_change")).one() \
        == "failed"
    assert _plan_changed_mails() == []


def test_second_click_reuses_the_open_payment_page(app, client, auth):
    _subscribe(client, auth)
    first = _confirm(client, "family-monthly")
    second = _confirm(client, "family-monthly")
    assert first.location == second.location
    assert count(Order, Order.kind == "plan_change") == 1


def test_difference_paid_after_the_plan_moved_on_is_not_applied(app, client, auth):
    sub = _subscribe(client, auth)
    upgrade = _confirm(client, "family-monthly")
    assert _confirm(client, "trial-week").status_code == 303  # another tab: downgrade at once

    late = client.post(upgrade.location, data={"outcome": "pay"}, follow_redirects=True)

    assert late.status_code == 409 and "PLAN_CHANGE_OUTDATED" in late.text
    db.session.expire_all()
    assert db.session.get(Subscription, sub.id).meal_plan.slug == "trial-week"
    assert user().plan_meal_credits == 5
    order = db.session.scalars(sa.select(Order).where(Order.kind == "plan_change")).one()
    assert order.status == "needs_review" and order.failure_code == "PLAN_CHANGE_OUTDATED"


def test_downgrade_preview_says_no_refund_and_applies_at_once_with_an_email(app, client, auth):
    sub = _subscribe(client, auth)

    page = client.get("/account/subscription/change?plan=trial-week")

    charge = _text(page.text, "plan-change-charge")
    assert "nothing is refunded" in charge and _date(app, sub.current_period_end) in charge
    assert "Now" in _text(page.text, "plan-change-when")
    assert "from 20 to 5 now" in _text(page.text, "plan-change-credits")
    r = _confirm(client, "trial-week")
    assert r.status_code == 303 and r.location.endswith("/account/")
    assert user().plan_meal_credits == 5
    [mail] = _plan_changed_mails()
    assert "Trial Week" in mail.subject and "nothing is refunded" in mail.body_text


@pytest.mark.parametrize("query, code, status", [
    ("plan=no-such-plan", "PLAN_NOT_FOUND", 404),
    ("", "PLAN_NOT_FOUND", 404),
    ("plan=meal-pack-5", "PLAN_NOT_FOUND", 404),
    ("plan=family-monthly&retired=1", "PLAN_INACTIVE", 410),
    ("plan=lunch-monthly", "ALREADY_SUBSCRIBED", 409),
])
def test_preview_refuses_with_the_catalogue_code(app, client, auth, query, code, status):
    _subscribe(client, auth)
    if "retired" in query:
        db.session.execute(sa.update(MealPlan).where(MealPlan.slug == "family-monthly")
                           .values(is_active=False))
        db.session.commit()
    r = client.get(f"/account/subscription/change?{query}")
    assert r.status_code == status and code in r.text


def test_preview_without_a_live_plan_is_order_not_found(app, client, auth):
    auth.register()
    r = client.get("/account/subscription/change?plan=family-monthly")
    assert r.status_code == 404 and "ORDER_NOT_FOUND" in r.text


def test_preview_needs_sign_in(client):
    r = client.get("/account/subscription/change?plan=family-monthly")
    assert r.status_code == 302 and "/login" in r.location


def test_plan_change_email_is_sent(app, client, auth, runner):
    port = free_port()
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_TIMEOUT_SECONDS=5)
    sink = SmtpSink(port)
    sink.start()
    try:
        _subscribe(client, auth)
        r = _confirm(client, "family-monthly")
        client.post(r.location, data={"outcome": "pay"})
        runner.invoke(args=["notifications", "send"])
    finally:
        sink.stop()
    [mail] = _plan_changed_mails()
    assert mail.status == "sent"
    [message] = [m for m in sink.messages if "Family Dinner" in m["Subject"]]
    assert format_money(250000, "INR") in message.get_payload(decode=True).decode()
