"""With Redis down the limiter counts in each process's memory: the limits still hold
(per worker), and the process says so once in its log."""
from __future__ import annotations

import logging

import pytest

from app.extensions import _WarnOnceOnMemoryFallback
from tests.conftest import form_token, make_app, serve_app
from tests.stripe.conftest import free_port

WRONG = "not my password 9"


@pytest.fixture
def app(_schema, monkeypatch):
    monkeypatch.setattr(_WarnOnceOnMemoryFallback, "warned_pid", None)  # a fresh process
    down = f"redis://127.0.0.1:{free_port()}/0"  # a port nothing listens on
    yield from serve_app(make_app(REDIS_URL=down, RATELIMIT_STORAGE_URI=down))


def _start_checkout(client):
    token = form_token(client.get("/plans/meal-pack-5").text, "checkout_token")
    return client.post("/checkout/meal-pack-5", data={"gateway": "test", "checkout_token": token})


def _fallback_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tiffin.ratelimit"
            and r.levelno == logging.WARNING]


def test_a_warning_is_logged_once_per_process_when_the_limiter_falls_back(client, auth, caplog):
    auth.register()
    with caplog.at_level(logging.WARNING):
        codes = [_start_checkout(client).status_code for _ in range(6)]
        # Another app in the same process (another worker thread's view of it): no repeat.
        other = make_app(REDIS_URL="redis://127.0.0.1:9/0",
                         RATELIMIT_STORAGE_URI="redis://127.0.0.1:9/0").test_client()
        other.post("/login", data={"email": "asha@example.com", "password": WRONG})

    assert codes == [303] * 5 + [429]  # the in-memory fallback still counts
    warnings = _fallback_warnings(caplog)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "per worker" in message and "CHECKOUT_RATE_LIMIT" in message and "REDIS_URL" in message


def test_failed_sign_ins_are_still_limited_with_redis_down(client, auth):
    auth.register()
    auth.logout()
    replies = [client.post("/login", data={"email": "asha@example.com", "password": WRONG})
               for _ in range(6)]
    assert [r.status_code for r in replies] == [400] * 5 + [429]
