"""Accounts resist guessing: failed sign-ins are throttled per account (5 per 15 minutes)
and per address (100 per hour), successes cost nothing, an unknown email and a wrong
password get the same answer, and new passwords are long and not common."""
from __future__ import annotations

import re

import pytest

from app.config import load_config
from app.models import User
from tests.conftest import count

WRONG = "not my password 9"
OTHER_ADDRESS = {"REMOTE_ADDR": "198.51.100.23"}


def sign_in(client, email="asha@example.com", password="correct horse 1", **kwargs):
    return client.post("/login", data={"email": email, "password": password}, **kwargs)


def page_code(response) -> str | None:
    match = re.search(r'data-testid="error-code">([A-Z_]+)<', response.text)
    return match.group(1) if match else None


def field_errors(response) -> list[str]:
    return re.findall(r'<p class="field-error">([^<]*)</p>', response.text)


@pytest.fixture(autouse=True)
def _mid_window():
    """Start each test mid-way through the limiter's windows (fixed ones reset at :00,
    :15, :30, :45), so a run that happens to cross a boundary cannot reset the count."""
    import datetime as dt

    import time_machine

    with time_machine.travel(dt.datetime(2026, 12, 3, 10, 7, 30, tzinfo=dt.timezone.utc)):
        yield


@pytest.fixture
def two_shoppers(client, auth):
    auth.register()
    auth.logout()
    auth.register(email="ravi@example.com", name="Ravi")
    auth.logout()


def test_the_sixth_failure_for_one_account_is_429_and_another_account_still_signs_in(
        client, two_shoppers):
    failures = [sign_in(client, password=WRONG) for _ in range(5)]
    assert [r.status_code for r in failures] == [400] * 5
    assert all(field_errors(r) == ["Email or password is incorrect."] for r in failures)

    sixth = sign_in(client, password=WRONG)
    assert sixth.status_code == 429 and page_code(sixth) == "RATE_LIMITED"
    assert "too many unsuccessful attempts to sign in" in sixth.text
    assert "checkouts" not in sixth.text
    # Locked means locked: the right password waits too, so guessing cannot go on.
    assert sign_in(client).status_code == 429
    # The same address, another account: signs in as usual.
    assert sign_in(client, email="ravi@example.com").status_code == 302


def test_the_account_limit_follows_the_email_whatever_its_case(client, two_shoppers):
    for email in ["asha@example.com", "ASHA@example.com", "Asha@Example.COM"] * 2:
        sign_in(client, email=email, password=WRONG)
    assert sign_in(client).status_code == 429


def test_a_successful_sign_in_does_not_count(client, two_shoppers):
    for _ in range(8):
        assert sign_in(client).status_code == 302
        client.post("/logout")
    assert [sign_in(client, password=WRONG).status_code for _ in range(4)] == [400] * 4
    assert sign_in(client).status_code == 302  # the fifth attempt, a success: free
    client.post("/logout")
    assert sign_in(client, password=WRONG).status_code == 400  # fifth failure
    assert sign_in(client, password=WRONG).status_code == 429


def test_an_unknown_email_counts_and_is_limited_like_a_known_one(client, two_shoppers):
    replies = [sign_in(client, email="nobody@example.com", password=WRONG) for _ in range(6)]
    assert [r.status_code for r in replies] == [400] * 5 + [429]


def test_the_address_limit_is_generous_then_stops_one_address_trying_many_accounts(
        client, two_shoppers):
    # 100 failures an hour from one address, spread over accounts (never 5 on one).
    for i in range(100):
        assert sign_in(client, email=f"guess{i}@example.com", password=WRONG).status_code == 400
    blocked = sign_in(client, email="ravi@example.com")
    assert blocked.status_code == 429 and page_code(blocked) == "RATE_LIMITED"
    # Another address is not affected.
    assert sign_in(client, environ_base=OTHER_ADDRESS).status_code == 302


def test_the_limits_are_settings(client, app, two_shoppers, monkeypatch):
    monkeypatch.setenv("LOGIN_ACCOUNT_RATE_LIMIT", "2 per hour")
    monkeypatch.setenv("LOGIN_ADDRESS_RATE_LIMIT", "3 per hour")
    settings = load_config("testing")
    assert settings["LOGIN_ACCOUNT_RATE_LIMIT"] == "2 per hour"
    assert settings["LOGIN_ADDRESS_RATE_LIMIT"] == "3 per hour"

    app.config["LOGIN_ACCOUNT_RATE_LIMIT"] = settings["LOGIN_ACCOUNT_RATE_LIMIT"]
    assert [sign_in(client, password=WRONG).status_code for _ in range(3)] == [400, 400, 429]


def test_default_limits():
    settings = load_config("testing")
    assert settings["LOGIN_ACCOUNT_RATE_LIMIT"] == "5 per 15 minutes"
    assert settings["LOGIN_ADDRESS_RATE_LIMIT"] == "100 per hour"


def test_an_unknown_email_and_a_wrong_password_get_the_same_answer(client, two_shoppers):
    client.get("/")  # the welcome and signed-out notices are shown
    unknown = sign_in(client, email="nobody@example.com", password=WRONG)
    wrong = sign_in(client, password=WRONG)

    assert unknown.status_code == wrong.status_code == 400
    assert field_errors(unknown) == field_errors(wrong) == ["Email or password is incorrect."]
    strip = lambda page: re.sub(r'value="[^"]*"', "", page.text)  # noqa: E731 - the echoed email
    assert strip(unknown) == strip(wrong)


# --- the password policy (registration) ---------------------------------------------

def register(client, password, email="new@example.com", name="Meera"):
    return client.post("/register", data={"name": name, "email": email, "password": password,
                                          "confirm": password})


@pytest.mark.parametrize("password", ["short", "nine char", "Tr0ub4d&3"])
def test_a_password_under_ten_characters_is_refused(client, password):
    reply = register(client, password)
    assert reply.status_code == 400
    assert "Use at least 10 characters for your password." in field_errors(reply)
    assert count(User) == 0


@pytest.mark.parametrize("password", ["password123", "1234567890", "qwertyuiop", "Password1234",
                                      "iloveyou123", "1q2w3e4r5t", "0000000000", "abcdefghij",
                                      "new@example.com"])
def test_a_common_or_trivially_guessable_password_is_refused(client, password):
    reply = register(client, password)
    assert reply.status_code == 400
    assert ("This password is too common or too easy to guess. Choose another."
            in field_errors(reply))
    assert count(User) == 0


@pytest.mark.parametrize("password", ["correct horse 1", "tiffin lunch at 1pm", "Meera's dabba 42"])
def test_a_long_uncommon_password_is_accepted(client, password):
    reply = register(client, password)
    assert reply.status_code == 302 and count(User) == 1


def test_an_over_long_password_is_refused(client):
    reply = register(client, "a long passphrase " * 8)  # 144 characters
    assert reply.status_code == 400
    assert "This can be at most 128 characters long." in field_errors(reply)


def test_an_unknown_email_costs_a_password_hash_like_a_wrong_password(client, auth, monkeypatch):
    """Timing must not tell which addresses have accounts: both paths hash once."""
    import werkzeug.security

    from app.services import accounts

    calls = []
    real = werkzeug.security.check_password_hash

    def counting(pwhash, password):
        calls.append(password)
        return real(pwhash, password)

    monkeypatch.setattr(accounts, "check_password_hash", counting)
    monkeypatch.setattr("app.models.user.check_password_hash", counting)
    auth.register()
    auth.logout()
    client.post("/login", data={"email": "asha@example.com", "password": "wrong password 1"})
    client.post("/login", data={"email": "nobody@example.com", "password": "wrong password 2"})
    assert calls == ["wrong password 1", "wrong password 2"]

