"""A reduced payment storm (bench/storm.py) against gunicorn on PostgreSQL.

21 payments mixed over the test gateway, Stripe and Razorpay (7 each, in random
order), each as a success redirect (Razorpay: its checkout callback) plus 5
copies of its signed webhook, shuffled and fired by 20 concurrent clients at 3
gunicorn workers. Stripe and Razorpay are the fakes of tests/fakes on local
servers, which the shop calls through the official SDKs. Afterwards the
database holds each payment exactly once, for every gateway, and the ops
monitor reports healthy.
"""
import pytest

from bench.fake_gateways import FakeGateways
from bench.server import Gunicorn, app_env
from bench.storm import GATEWAYS, run_monitor, run_storm
from tests.conftest import database_url, make_app, serve_app

PAYMENTS, COPIES, PER_GATEWAY = 21, 5, 7


@pytest.fixture
def fakes():
    with FakeGateways(GATEWAYS) as fakes:
        yield fakes


@pytest.fixture
def app(_schema, fakes):
    yield from serve_app(make_app(**fakes.settings()))


def test_storm_fulfils_each_payment_exactly_once(app, fakes, pg_only):
    env = app_env(database_url(), secret_key=app.config["SECRET_KEY"],
                  webhook_secret=app.config["TEST_GATEWAY_WEBHOOK_SECRET"],
                  CHECKOUT_RATE_LIMIT="10000 per minute", **fakes.settings())
    with Gunicorn(env, workers=3) as server:
        summary = run_storm(app, server.url, payments=PAYMENTS, copies=COPIES, clients=20,
                            max_seconds=120, gateways=GATEWAYS, seed=7, fakes=fakes)
    assert summary["statuses"] == {"redirect:303": PAYMENTS, "success_page:200": PAYMENTS,
                                   "webhook:200": PAYMENTS * COPIES}, summary["errors"]
    assert summary["five_xx"] == 0
    _assert_each_once(summary["held"], PAYMENTS)
    for gateway in GATEWAYS:
        share = summary["by_gateway"][gateway]
        assert share["payments"] == PER_GATEWAY, gateway
        assert share["statuses"] == {"redirect:303": PER_GATEWAY, "success_page:200": PER_GATEWAY,
                                     "webhook:200": PER_GATEWAY * COPIES}, (gateway, summary["errors"])
        _assert_each_once(share["held"], PER_GATEWAY)
        assert share["ok"], (gateway, share["checks"])
    # The shop really asked the fakes, and no more than it should: each fresh Stripe
    # event fetches its subscription once; a return that arrives before the payment is
    # settled retrieves the session and its subscription (one that arrives after asks
    # nothing); Razorpay's callback, when first, fetches the payment and subscription,
    # and subscription.charged carries what it needs.
    assert PER_GATEWAY <= summary["by_gateway"]["stripe"]["api_calls"] <= 3 * PER_GATEWAY
    assert summary["by_gateway"]["razorpay"]["api_calls"] <= 2 * PER_GATEWAY
    assert summary["ok"], summary["checks"]
    monitor = run_monitor(database_url(), env)
    assert monitor["monitor"] == "healthy", monitor


def _assert_each_once(held: dict, n: int) -> None:
    assert held["paid_orders"] == n
    assert held["subscriptions"] == n and held["users_with_one_subscription"] == n
    assert held["orders_with_one_grant"] == n and held["credit_rows"] == n
    assert held["confirmation_emails"] == n and held["users_with_one_email"] == n
    assert held["events_stored"] == n and held["events_processed"] == n
    assert held["users_with_wrong_credits"] == 0
