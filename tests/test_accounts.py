"""Register, sign in, sign out; a shopper sees only their own orders."""
import sqlalchemy as sa

from app.extensions import db
from app.models import Order, User
from tests.conftest import count, user
from tests.flows import pay


def test_register_hashes_password_and_signs_in(client, auth):
    r = auth.register()
    assert r.status_code == 302
    u = user()
    assert u.password_hash != "correct horse 1" and u.check_password("correct horse 1")
    assert client.get("/account/").status_code == 200


def test_register_rejects_duplicate_email_case_insensitively(client, auth):
    auth.register()
    auth.logout()
    r = auth.register(email="ASHA@example.com")
    assert r.status_code == 400 and "already exists" in r.text
    assert count(User) == 1


def test_register_validates_fields(client):
    r = client.post("/register", data={"name": "", "email": "nope", "password": "short",
                                       "confirm": "other"})
    assert r.status_code == 400 and count(User) == 0


def test_login_logout(client, auth):
    auth.register()
    auth.logout()
    assert client.get("/account/").status_code == 302
    bad = auth.login(password="wrong password")
    assert bad.status_code == 400 and "incorrect" in bad.text
    good = auth.login()
    assert good.status_code == 302 and good.location.endswith("/account/")
    assert client.get("/account/").status_code == 200


def test_login_next_only_redirects_inside_the_site(client, auth):
    auth.register()
    auth.logout()
    r = client.post("/login?next=https://evil.example/steal",
                    data={"email": "asha@example.com", "password": "correct horse 1"})
    assert r.location.endswith("/account/")
    auth.logout()
    r = client.post("/login?next=/plans/lunch-monthly",
                    data={"email": "asha@example.com", "password": "correct horse 1"})
    assert r.location.endswith("/plans/lunch-monthly")


def test_account_shows_status_period_end_credits_and_history(client, auth):
    auth.register()
    pay(client, "lunch-monthly")
    page = client.get("/account/")
    order = db.session.scalars(sa.select(Order)).one()
    assert 'data-testid="subscription-status">active' in page.text
    assert "Current period ends" in page.text
    assert "Meal credits: <strong>20</strong>" in page.text
    assert order.reference in page.text
    assert client.get(f"/account/orders/{order.reference}").status_code == 200


def test_another_users_order_is_a_404(client, auth):
    auth.register()
    pay(client, "lunch-monthly")
    reference = db.session.scalars(sa.select(Order.reference)).one()
    auth.logout()
    auth.register(email="other@example.com", name="Other")

    for path in (f"/account/orders/{reference}", f"/checkout/success/{reference}"):
        r = client.get(path)
        assert r.status_code == 404 and "ORDER_NOT_FOUND" in r.text, path
    assert reference not in client.get("/account/").text


def test_protected_pages_redirect_to_login(client):
    for path in ("/account/", "/account/orders/TF-000000000000", "/checkout/success/TF-1"):
        r = client.get(path)
        assert r.status_code == 302 and "/login" in r.location, path


def test_cancel_resume_and_change_plan_on_test_gateway(client, auth):
    auth.register()
    pay(client, "lunch-monthly")

    client.post("/account/subscription/cancel")
    db.session.expire_all()
    sub = user().subscriptions.one()
    assert sub.cancel_at_period_end and sub.status == "active"
    assert "Keep my plan" in client.get("/account/").text

    client.post("/account/subscription/resume")
    db.session.expire_all()
    assert not user().subscriptions.one().cancel_at_period_end

    r = client.post("/account/subscription/change", data={"plan": "trial-week"})
    assert r.status_code == 303
    db.session.expire_all()
    u = user()
    assert u.subscriptions.one().meal_plan.slug == "trial-week"
    assert u.plan_meal_credits == 5  # downgrade: 20 unused meals capped to the new plan's 5
