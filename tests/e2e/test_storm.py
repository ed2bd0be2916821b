"""A reduced payment storm (bench/storm.py) against gunicorn on PostgreSQL.

20 payments, each as a success redirect plus 5 copies of its signed webhook,
shuffled and fired by 20 concurrent clients at 3 gunicorn workers; afterwards the
database holds each payment exactly once and the ops monitor reports healthy.
"""
from bench.server import Gunicorn, app_env
from bench.storm import run_monitor, run_storm
from tests.conftest import database_url


def test_storm_fulfils_each_payment_exactly_once(app, pg_only):
    env = app_env(database_url(), secret_key=app.config["SECRET_KEY"],
                  webhook_secret=app.config["TEST_GATEWAY_WEBHOOK_SECRET"],
                  CHECKOUT_RATE_LIMIT="10000 per minute")
    with Gunicorn(env, workers=3) as server:
        summary = run_storm(app, server.url, payments=20, copies=5, clients=20, max_seconds=120,
                            seed=7)
    assert summary["statuses"] == {"redirect:303": 20, "success_page:200": 20,
                                   "webhook:200": 100}, summary["errors"]
    assert summary["five_xx"] == 0
    held = summary["held"]
    assert held["paid_orders"] == 20
    assert held["subscriptions"] == 20 and held["users_with_one_subscription"] == 20
    assert held["orders_with_one_grant"] == 20 and held["credit_rows"] == 20
    assert held["confirmation_emails"] == 20 and held["users_with_one_email"] == 20
    assert held["events_stored"] == 20 and held["events_processed"] == 20
    assert held["users_with_wrong_credits"] == 0
    assert summary["ok"], summary["checks"]
    monitor = run_monitor(database_url(), env)
    assert monitor["monitor"] == "healthy", monitor
