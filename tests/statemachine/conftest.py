"""The shop with all three gateways at once, for the model-based payment test.

Stripe is FakeStripe on pytest-httpserver's server, Razorpay is FakeRazorpay on a
second local server, and the test gateway is the app's own hosted page, whose
in-app webhook deliveries go to a port nothing listens on: the machine delivers
the gateway's webhooks itself, when and as often as it chooses.

Hypothesis profiles (pick one with TIFFIN_HYPOTHESIS_PROFILE):
  ci           the default on SQLite: few, derandomised examples (same ones every run)
  ci-postgres  the default on PostgreSQL: fewer still
  dev          while working on the machine: a few random examples
  deep         nightly: random, many long examples, no deadline
TIFFIN_HYPOTHESIS_EXAMPLES sets how many examples dev and deep run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from pytest_httpserver import HTTPServer
from werkzeug.security import generate_password_hash

import app.webhooks.handlers as webhook_handlers
from app.extensions import db
from app.models import User
from tests.conftest import is_postgres, make_app, reset_shop
from tests.fakes.stripe import link_stripe_prices
from tests.fakes.razorpay import FakeRazorpay
from tests.razorpay.conftest import KEY_ID, KEY_SECRET
from tests.razorpay.conftest import WEBHOOK_SECRET as RAZORPAY_WEBHOOK_SECRET
from tests.statemachine.gateways import World
from tests.stripe.conftest import PRICE_IDS, STRIPE_CONFIG, stripe_with_prices

LOST_WEBHOOKS_URL = "http://127.0.0.1:9/lost"  # the discard port: nothing answers
PASSWORD = "correct horse 1"
# Accounts are set-up, not under test: a one-round hash keeps each example's sign-in cheap
# (the app's own scrypt costs half a second per sign-up).
FAST_PASSWORD_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1")

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
_EXAMPLES = os.environ.get("TIFFIN_HYPOTHESIS_EXAMPLES")  # overrides dev's and deep's count
settings.register_profile("ci", max_examples=20, stateful_step_count=25, deadline=None,
                          derandomize=True, database=None, print_blob=True,
                          suppress_health_check=_QUIET)
settings.register_profile("ci-postgres", settings.get_profile("ci"), max_examples=8)
settings.register_profile("dev", settings.get_profile("ci"), derandomize=False,
                          max_examples=int(_EXAMPLES or 10))
settings.register_profile("deep", max_examples=int(_EXAMPLES or 100_000), stateful_step_count=60,
                          deadline=None, derandomize=False, print_blob=True,
                          suppress_health_check=_QUIET)


def machine_settings() -> settings:
    """The profile TIFFIN_HYPOTHESIS_PROFILE names, else the CI profile for this database."""
    default = "ci-postgres" if is_postgres() else "ci"
    return settings.get_profile(os.environ.get("TIFFIN_HYPOTHESIS_PROFILE") or default)


@dataclass
class Faults:
    """Faults the machine injects into the shop."""

    crash_once: set = field(default_factory=set)  # event ids whose next handling crashes


class CrashBetweenStoreAndProcess(RuntimeError):
    """The injected fault: the event was stored, then its handler died."""


@pytest.fixture
def faults(monkeypatch) -> Faults:
    found = Faults()
    dispatch = webhook_handlers.dispatch

    def crashing_dispatch(event):
        if event.event_id in found.crash_once:
            found.crash_once.discard(event.event_id)
            raise CrashBetweenStoreAndProcess(f"injected crash handling {event.event_id}")
        return dispatch(event)

    monkeypatch.setattr(webhook_handlers, "dispatch", crashing_dispatch)
    return found


@pytest.fixture
def razorpay_server():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


class Shop:
    """The app under test and the gateways' servers; `reset` gives each example a fresh start."""

    def __init__(self, app, stripe_server, razorpay_server, faults):
        self.app, self.faults = app, faults
        self.stripe_server, self.razorpay_server = stripe_server, razorpay_server

    def reset(self, shoppers: int) -> World:
        """Empty tables, a seeded catalogue, `shoppers` accounts (shopper0@example.com …),
        and fresh fakes holding the catalogue's prices and plans."""
        self.faults.crash_once.clear()
        self.stripe_server.clear()
        self.razorpay_server.clear()
        stripe = stripe_with_prices(self.stripe_server)
        razorpay = FakeRazorpay(self.razorpay_server, key_id=KEY_ID, key_secret=KEY_SECRET)
        with self.app.app_context():
            reset_shop(lambda: link_stripe_prices(PRICE_IDS))
            db.session.add_all(User(email=f"shopper{i}@example.com", name=f"Shopper {i}",
                                    password_hash=FAST_PASSWORD_HASH) for i in range(shoppers))
            db.session.commit()
        result = self.app.test_cli_runner().invoke(args=["razorpay", "sync-plans"])
        assert result.exit_code == 0, result.output
        return World(self.app, stripe, razorpay)


@pytest.fixture
def shop(_schema, httpserver, razorpay_server, faults):
    app = make_app(**STRIPE_CONFIG, STRIPE_API_BASE=httpserver.url_for("").rstrip("/"),
                   RAZORPAY_KEY_ID=KEY_ID, RAZORPAY_KEY_SECRET=KEY_SECRET,
                   RAZORPAY_WEBHOOK_SECRET=RAZORPAY_WEBHOOK_SECRET,
                   RAZORPAY_API_BASE=razorpay_server.url_for("/").rstrip("/"),
                   TEST_GATEWAY_WEBHOOK_URL=LOST_WEBHOOKS_URL,
                   CHECKOUT_RATE_LIMIT="100000 per minute")
    # No app context is held open: each request pushes its own (a shared one would share
    # `g`, and with it Flask-Login's signed-in user, between the two shoppers' browsers).
    yield Shop(app, httpserver, razorpay_server, faults)
    with app.app_context():
        db.engine.dispose()
