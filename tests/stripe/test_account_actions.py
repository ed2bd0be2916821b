"""Plan change, cancel at period end / resume, and delete account, at "Stripe"."""
from app.models import Subscription
from tests.conftest import count, plan, user
from tests.stripe.helpers import deliver, point_stripe_at, reload, subscribe
from tests.stripe.test_webhooks import _use_meals


def _updates(fake, sub_id):
    return [p for m, path, p, _ in fake.requests if m == "POST" and path == f"/v1/subscriptions/{sub_id}"]


def test_change_plan_modifies_stripe_with_prorations_and_resets_credits(client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    _use_meals(5)

    r = client.post("/account/subscription/change", data={"plan": "family-monthly"})

    assert r.status_code == 303
    [update] = _updates(fake_stripe, session["subscription"])
    item = fake_stripe.subscriptions[session["subscription"]]["items"]["data"][0]
    assert update["items"] == [{"id": item["id"], "price": "price_family"}]
    assert update["proration_behavior"] == "create_prorations"
    assert reload(sub).meal_plan_id == plan("family-monthly").id
    assert user().plan_meal_credits == 35
    # Stripe's customer.subscription.updated for the same change does not reset again.
    _use_meals(10)
    deliver(client, fake_stripe, "customer.subscription.updated",
            fake_stripe.subscriptions[session["subscription"]])
    assert user().plan_meal_credits == 25


def test_change_plan_downgrade_never_goes_negative(client, auth, fake_stripe):
    auth.register()
    subscribe(client, fake_stripe, "family-monthly")
    _use_meals(38)
    client.post("/account/subscription/change", data={"plan": "lunch-monthly"})
    assert user().plan_meal_credits == 0


def test_change_plan_when_stripe_is_down_changes_nothing(app, client, auth, fake_stripe):
    auth.register()
    _, _, sub = subscribe(client, fake_stripe)
    point_stripe_at(app)
    r = client.post("/account/subscription/change", data={"plan": "family-monthly"})
    assert r.status_code == 503 and "GATEWAY_UNAVAILABLE" in r.text
    assert reload(sub).meal_plan_id == plan("lunch-monthly").id and user().plan_meal_credits == 20


def test_account_page_offers_delete(client, auth, fake_stripe):
    auth.register()
    page = client.get("/account/")
    assert 'data-testid="delete-account-link"' in page.text
    confirm = client.get("/account/delete")
    assert confirm.status_code == 200 and 'name="password"' in confirm.text


def test_delete_account_with_wrong_password_deletes_nothing(client, auth, fake_stripe):
    auth.register()
    subscribe(client, fake_stripe)
    r = client.post("/account/delete", data={"password": "nope", "confirm": "y"})
    assert r.status_code == 400 and "That is not your password." in r.text
    assert user().deleted_at is None and count(Subscription, Subscription.status == "active") == 1


def test_delete_account_refused_when_stripe_cannot_cancel(app, client, auth, fake_stripe):
    auth.register()
    _, _, sub = subscribe(client, fake_stripe)
    point_stripe_at(app)
    r = client.post("/account/delete", data={"password": "correct horse 1", "confirm": "y"})
    assert r.status_code == 503 and "GATEWAY_UNAVAILABLE" in r.text
    assert user().deleted_at is None and reload(sub).status == "active"
