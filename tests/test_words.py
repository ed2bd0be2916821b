"""The words a shopper reads: error pages, gateway names, the account page,
amounts and times as Babel writes them for the shop, the dev mailbox and the
newcomer's `flask seed --demo`."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
import time_machine

from app.config import ConfigError, load_config
from app.errors import CATALOGUE
from app.extensions import db
from app.models import NotificationOutbox, Order, User
from app.money import format_money, format_when, minor_unit_digits
from app.services.accounts import DEMO_SHOPPER_EMAIL, DEMO_SHOPPER_PASSWORD
from tests.conftest import make_app, serve_app
from tests.flows import pay

PAID_AT_UTC = datetime(2026, 3, 1, 20, 15, tzinfo=timezone.utc)  # 2 Mar 2026, 1:45 AM in IST


def _title(html: str) -> str:
    return re.search(r"<title>(.*?)</title>", html, re.S).group(1)


# --- money and time ----------------------------------------------------------

def test_rupees_use_lakh_grouping(app):
    assert format_money(12345600, "INR") == "₹1,23,456.00"
    assert format_money(-1999, "INR") == "-₹19.99"


@pytest.mark.parametrize("currency, digits, minor, shown", [
    ("JPY", 0, 1234, "JP¥1,234"), ("USD", 2, 1999, "$19.99"), ("INR", 2, 89900, "₹899.00"),
    ("KWD", 3, 12345, "KWD12.345"),
])
def test_each_currency_has_its_own_minor_units(app, currency, digits, minor, shown):
    assert minor_unit_digits(currency) == digits
    assert format_money(minor, currency) == shown


def test_the_shop_locale_and_time_zone_are_settings(_schema):
    for _ in serve_app(make_app(SHOP_LOCALE="en_US", SHOP_TIMEZONE="America/New_York")):
        assert format_money(12345600, "USD") == "$123,456.00"
        assert format_when(PAID_AT_UTC, "datetime") == "1 Mar 2026, 3:15 PM EST"


@pytest.mark.parametrize("name, value", [("SHOP_LOCALE", "xx_NOPE"),
                                         ("SHOP_TIMEZONE", "Mars/Olympus")])
def test_an_unknown_locale_or_time_zone_refuses_to_start(name, value):
    with pytest.raises(ConfigError, match=name):
        make_app(**{name: value})


def test_a_utc_payment_time_reads_in_ist_on_the_order_page_and_in_the_email(client, auth):
    auth.register()
    with time_machine.travel(PAID_AT_UTC, tick=False):
        pay(client)
    order = db.session.scalars(sa.select(Order)).one()
    mail = db.session.scalars(sa.select(NotificationOutbox)).one()

    page = client.get(f"/account/orders/{order.reference}").text

    assert "2 Mar 2026, 1:45 AM IST" in page
    assert "on 2 Mar 2026, 1:45 AM IST" in mail.body_text
    assert "₹2,999.00" in page and "₹2,999.00" in mail.body_text
    # The period ends 1 Apr 2026 20:15 UTC, which is already 2 Apr in India.
    assert "active until 2 Apr 2026." in mail.body_text


def test_plan_prices_come_from_babel(client):
    assert "₹5,499.00" in client.get("/plans/family-monthly").text


# --- error pages ---------------------------------------------------------------

def test_every_error_code_has_a_headline():
    assert [c for c, e in CATALOGUE.items() if not e.headline] == []


def test_error_page_leads_with_the_headline_and_keeps_the_code(client):
    r = client.get("/no-such-page")

    assert r.status_code == 404
    assert _title(r.text).startswith("Page not found (PAGE_NOT_FOUND)")
    h1 = re.search(r"<h1[^>]*>(.*?)</h1>", r.text, re.S).group(1)
    assert h1 == "Page not found"
    assert r.text.index("<h1") < r.text.index('data-testid="error-code"')
    assert re.search(r'data-testid="error-code">PAGE_NOT_FOUND<', r.text)
    assert re.search(r'data-testid="support-ref">REF-[0-9A-F]{10}<', r.text)


def test_declined_page_names_the_decline(client, auth):
    auth.register()
    r = pay(client, outcome="decline", reason="insufficient_funds")

    assert r.status_code == 402
    assert _title(r.text).startswith("Payment declined (PAYMENT_DECLINED)")
    assert 'data-testid="error-code">PAYMENT_DECLINED<' in r.text


# --- account and order pages ---------------------------------------------------

def test_order_page_names_the_gateway_as_shoppers_know_it(client, auth):
    auth.register()
    pay(client)
    order = db.session.scalars(sa.select(Order)).one()

    page = client.get(f"/account/orders/{order.reference}").text

    assert re.search(r'data-testid="gateway">Test payment<', page)
    assert ">test<" not in page


def test_account_access_line_and_a_plan_set_to_end(client, auth):
    auth.register()
    before = client.get("/account/").text
    assert 'data-testid="access" data-access="no"' in before
    pay(client)
    paid = client.get("/account/").text
    assert 'data-testid="access" data-access="yes"' in paid
    assert "You can order meals now." in paid and "ends-at-period-end" not in paid

    client.post("/account/subscription/cancel")
    ending = client.get("/account/").text

    assert 'data-testid="ends-at-period-end"' in ending
    assert "Will not renew" in ending and "Ends At Period End" not in ending
    assert 'data-access="yes"' in ending  # paid up to the period end


def test_a_protected_page_asks_to_sign_in_in_plain_words(client):
    r = client.get("/account/", follow_redirects=True)

    assert "Please sign in to see that page." in r.text
    assert "Please log in" not in r.text


# --- development: the mailbox ------------------------------------------------

@pytest.fixture
def dev_app(_schema, monkeypatch):
    monkeypatch.delenv("MAIL_SERVER", raising=False)
    yield from serve_app(make_app(TIFFIN_ENV="development", DEV_MAILBOX=True,
                                  MAIL_SEND_PROMPTLY=False))


def test_dev_mailbox_shows_sent_mail_as_the_shopper_gets_it(dev_app):
    client = dev_app.test_client()
    client.post("/register", data={"name": "Asha", "email": "asha@example.com",
                                   "password": "correct horse 1", "confirm": "correct horse 1"})
    pay(client)
    empty = client.get("/dev/mailbox").text
    assert 'data-testid="dev-mailbox-link"' in empty and 'data-testid="mailbox-empty"' in empty

    sent = dev_app.test_cli_runner().invoke(args=["notifications", "send"])

    assert sent.exit_code == 0 and "Sent 1" in sent.output
    page = client.get("/dev/mailbox").text
    order = db.session.scalars(sa.select(Order)).one()
    assert page.count('data-testid="mailbox-message"') == 1
    assert 'data-testid="mail-to">asha@example.com<' in page
    assert f"Payment confirmed: Everyday Lunch (order {order.reference})" in page
    assert "We received your payment of ₹2,999.00" in page


def test_dev_mailbox_is_a_404_outside_development(client):
    r = client.get("/dev/mailbox")

    assert r.status_code == 404 and "PAGE_NOT_FOUND" in r.text
    assert "dev-mailbox-link" not in client.get("/").text


def test_the_dev_mailbox_transport_is_refused_outside_development():
    with pytest.raises(ConfigError, match="DEV_MAILBOX"):
        make_app(DEV_MAILBOX=True)


def test_development_without_a_mail_server_uses_the_mailbox(monkeypatch):
    monkeypatch.delenv("MAIL_SERVER", raising=False)
    assert load_config("development")["DEV_MAILBOX"] is True
    monkeypatch.setenv("MAIL_SERVER", "smtp.example.com")
    assert load_config("development")["DEV_MAILBOX"] is False
    monkeypatch.delenv("MAIL_SERVER")
    assert load_config("production")["DEV_MAILBOX"] is False


# --- newcomer ------------------------------------------------------------------

def test_seed_demo_creates_a_shopper_who_can_sign_in(dev_app):
    runner = dev_app.test_cli_runner()

    first = runner.invoke(args=["seed", "--demo"])
    again = runner.invoke(args=["seed", "--demo"])

    assert first.exit_code == 0 and again.exit_code == 0
    assert f"Demo shopper: {DEMO_SHOPPER_EMAIL} / password {DEMO_SHOPPER_PASSWORD}" in first.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)
                             .where(User.email == DEMO_SHOPPER_EMAIL)) == 1
    client = dev_app.test_client()
    r = client.post("/login", data={"email": DEMO_SHOPPER_EMAIL, "password": DEMO_SHOPPER_PASSWORD})
    assert r.status_code == 302 and r.location.endswith("/account/")


def test_plain_seed_creates_no_shopper_and_demo_is_refused_outside_development(app, runner):
    plain = runner.invoke(args=["seed"])
    demo = runner.invoke(args=["seed", "--demo"])

    assert plain.exit_code == 0 and "Demo shopper" not in plain.output
    assert demo.exit_code == 1 and "TIFFIN_ENV=development" in demo.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_app_base_url_follows_port_in_development(monkeypatch):
    monkeypatch.delenv("APP_BASE_URL", raising=False)
    monkeypatch.setenv("PORT", "8123")
    assert load_config("development")["APP_BASE_URL"] == "http://127.0.0.1:8123"
    monkeypatch.setenv("APP_BASE_URL", "https://shop.example")
    assert load_config("development")["APP_BASE_URL"] == "https://shop.example"

