"""Plan change at "Stripe": a real proration preview, and the update prorated at the same instant."""
import time

import sqlalchemy as sa

from app.extensions import db
from app.models import NotificationOutbox
from app.money import format_money
from tests.conftest import form_token, plan, user
from tests.stripe.helpers import point_stripe_at, reload, subscribe
from tests.test_plan_change import _date, _text


def _previews(fake):
    return [p for m, path, p, _ in fake.requests if m == "POST" and path == "/v1/invoices/create_preview"]


def _updates(fake, sub_id):
    return [p for m, path, p, _ in fake.requests if m == "POST" and path == f"/v1/subscriptions/{sub_id}"]


def _prorations(fake, sub_id, old_price, new_price, at):
    """What Stripe prorates for swapping the price at `at`: remaining time on the new
    price less unused time on the old one (as the fake computes it)."""
    item = fake.subscriptions[sub_id]["items"]["data"][0]
    start, end = item["current_period_start"], item["current_period_end"]
    share = (end - at) / (end - start)
    return round(new_price * share) - round(old_price * share)


def test_preview_asks_stripe_and_shows_the_prorated_amount_and_the_invoice_date(
        app, client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)

    page = client.get("/account/subscription/change?plan=family-monthly")

    assert page.status_code == 200
    [preview] = _previews(fake_stripe)
    item = fake_stripe.subscriptions[session["subscription"]]["items"]["data"][0]
    assert preview["subscription"] == session["subscription"]
    details = preview["subscription_details"]
    assert details["items"] == [{"id": item["id"], "price": "price_family"}]
    assert details["proration_behavior"] == "create_prorations"
    proration_date = int(details["proration_date"])
    assert form_token(page.text, "proration_date") == str(proration_date)
    assert abs(proration_date - time.time()) < 3600
    charge = _text(page.text, "plan-change-charge")
    expected = _prorations(fake_stripe, session["subscription"], 299900, 549900, proration_date)
    assert expected > 0
    assert f"{format_money(expected, 'INR')} for the rest of this period is added to your next " \
        f"invoice, on {_date(app, sub.current_period_end)}" in charge
    assert "Now" in _text(page.text, "plan-change-when")
    assert "from 20 to 40 now" in _text(page.text, "plan-change-credits")
    assert reload(sub).meal_plan_id == plan("lunch-monthly").id  # a preview changes nothing
    assert _updates(fake_stripe, session["subscription"]) == []


def test_confirm_carries_the_preview_proration_date_to_the_update_and_emails_the_amount(
        app, client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    page = client.get("/account/subscription/change?plan=family-monthly")
    proration_date = form_token(page.text, "proration_date")

    r = client.post("/account/subscription/change",
                    data={"plan": "family-monthly", "proration_date": proration_date})

    assert r.status_code == 303 and r.location.endswith("/account/")
    [update] = _updates(fake_stripe, session["subscription"])
    assert update["proration_date"] == proration_date
    assert update["proration_behavior"] == "create_prorations"
    assert all(p["subscription_details"]["proration_date"] == proration_date
               for p in _previews(fake_stripe))
    assert reload(sub).meal_plan_id == plan("family-monthly").id and user().plan_meal_credits == 40
    [mail] = db.session.scalars(sa.select(NotificationOutbox).where(
        NotificationOutbox.kind == "plan_changed")).all()
    expected = _prorations(fake_stripe, session["subscription"], 299900, 549900,
                           int(proration_date))
    assert "Family Dinner" in mail.subject
    assert f"{format_money(expected, 'INR')} for the rest of this period is added to your " \
        f"next invoice, on {_date(app, sub.current_period_end)}" in mail.body_text


def test_stale_or_malformed_proration_date_is_form_expired_and_changes_nothing(
        app, client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    for stale in (str(int(time.time()) - 3 * 3600), str(int(time.time()) + 3600), "soon"):
        r = client.post("/account/subscription/change",
                        data={"plan": "family-monthly", "proration_date": stale})
        assert r.status_code == 400 and "FORM_EXPIRED" in r.text
    assert _updates(fake_stripe, session["subscription"]) == []
    assert reload(sub).meal_plan_id == plan("lunch-monthly").id and user().plan_meal_credits == 20


def test_downgrade_preview_shows_the_credit_on_the_next_invoice(app, client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe, "family-monthly")
    page = client.get("/account/subscription/change?plan=lunch-monthly")
    charge = _text(page.text, "plan-change-charge")
    assert "is credited to your next invoice" in charge
    assert _date(app, sub.current_period_end) in charge


def test_preview_when_stripe_is_down_is_gateway_unavailable(app, client, auth, fake_stripe):
    auth.register()
    subscribe(client, fake_stripe)
    point_stripe_at(app)
    r = client.get("/account/subscription/change?plan=family-monthly")
    assert r.status_code == 503 and "GATEWAY_UNAVAILABLE" in r.text
