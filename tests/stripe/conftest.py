"""Fixtures for the Stripe tests: the app pointed at a local Stripe, and localstripe.

`fake_stripe` (pytest-httpserver) answers Checkout Sessions, Subscriptions,
Invoice Payments, Prices and Products; `localstripe` is the localstripe process
for what it serves (subscription updates, cancellation, payment intents,
refunds). A test module picks which one the app talks to by overriding
`stripe_api_base`.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import make_app, serve_app
from tests.fakes.stripe import link_stripe_prices
from tests.fakes.stripe import FakeStripe

WEBHOOK_SECRET = "whsec_current_secret"
PREVIOUS_WEBHOOK_SECRET = "whsec_previous_secret"  # still accepted during rotation
STRIPE_CONFIG = {
    "STRIPE_SECRET_KEY": "sk_test_tiffin",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_tiffin",
    "STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET}, {PREVIOUS_WEBHOOK_SECRET}",
    "STRIPE_PRICE_IDS": "",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stripe_with_prices(server) -> FakeStripe:
    """A FakeStripe on `server` holding the catalogue's prices (see PRICE_IDS)."""
    fake = FakeStripe(server)
    fake.add_price("price_lunch", 299900)
    fake.add_price("price_family", 549900)
    fake.add_price("price_trial", 89900, interval="week")
    fake.add_price("price_pack5", 79900, interval=None)
    return fake


@pytest.fixture
def fake_stripe(httpserver):
    return stripe_with_prices(httpserver)


@pytest.fixture
def stripe_api_base(fake_stripe) -> str:
    return fake_stripe.url


@pytest.fixture
def stripe_overrides() -> dict:
    """Extra config for one test module (override in the module)."""
    return {}


PRICE_IDS = {"lunch-monthly": "price_lunch", "family-monthly": "price_family",
             "trial-week": "price_trial", "meal-pack-5": "price_pack5"}


@pytest.fixture
def app(_schema, stripe_api_base, stripe_overrides):
    yield from serve_app(
        make_app(**STRIPE_CONFIG, STRIPE_API_BASE=stripe_api_base, **stripe_overrides),
        lambda: link_stripe_prices(PRICE_IDS))


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory):
    """A localstripe process on a free port for the whole run."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("localstripe") / "localstripe.log", "w")
    exe = Path(sys.executable).with_name("localstripe")
    proc = subprocess.Popen([str(exe), "--port", str(port), "--from-scratch"], stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path_factory.mktemp("ls-cwd"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/v1/customers", auth=("sk_test_x", ""), timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"localstripe did not start (exit {proc.poll()})")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def localstripe(localstripe_server):
    """localstripe's URL, with its data wiped after the test."""
    yield localstripe_server
    requests.delete(localstripe_server + "/_config/data", timeout=5)
