"""`flask stripe sync-prices` and the reconcile listing."""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from app.extensions import db
from app.gateways import get_gateway
from app.gateways.base import NOT_COMPLETED, PAID
from app.models import MealPlan
from tests.conftest import plan, user
from tests.stripe.helpers import paid_session, point_stripe_at, start


def _clear_price_ids():
    db.session.execute(sa.update(MealPlan).values(stripe_price_id=None))
    db.session.commit()


def test_sync_prices_creates_products_and_prices_once(runner, fake_stripe):
    _clear_price_ids()
    known = set(fake_stripe.prices)

    first = runner.invoke(args=["stripe", "sync-prices"])

    assert first.exit_code == 0, first.output
    created = {k: v for k, v in fake_stripe.prices.items() if k not in known}
    assert len(created) == 4 and set(fake_stripe.products) == {
        "tiffin-trial-week", "tiffin-lunch-monthly", "tiffin-family-monthly", "tiffin-meal-pack-5"}
    db.session.expire_all()
    lunch = plan("lunch-monthly")
    price = fake_stripe.prices[lunch.stripe_price_id]
    assert (price["unit_amount"], price["currency"], price["recurring"]["interval"]) == (
        299900, "inr", "month")
    assert fake_stripe.prices[plan("meal-pack-5").stripe_price_id]["recurring"] is None
    assert f"lunch-monthly = {lunch.stripe_price_id}" in first.output

    second = runner.invoke(args=["stripe", "sync-prices"])

    assert second.exit_code == 0 and len(fake_stripe.prices) == len(known) + 4
    db.session.expire_all()
    assert plan("lunch-monthly").stripe_price_id == lunch.stripe_price_id


def test_configured_price_ids_win(app, runner, fake_stripe):
    _clear_price_ids()
    app.config["STRIPE_PRICE_IDS"] = "lunch-monthly=price_from_config, family-monthly=price_fam_cfg"
    result = runner.invoke(args=["stripe", "sync-prices"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert plan("lunch-monthly").stripe_price_id == "price_from_config"
    assert plan("family-monthly").stripe_price_id == "price_fam_cfg"


def test_configured_price_is_used_at_checkout(app, client, auth, fake_stripe):
    app.config["STRIPE_PRICE_IDS"] = "lunch-monthly=price_family"
    auth.register()
    start(client)
    [params] = [p for m, path, p, _ in fake_stripe.requests if path == "/v1/checkout/sessions"]
    assert params["line_items"][0]["price"] == "price_family"


def test_sync_prices_when_stripe_is_down_exits_1(app, runner, fake_stripe):
    _clear_price_ids()
    point_stripe_at(app)
    result = runner.invoke(args=["stripe", "sync-prices"])
    assert result.exit_code == 1 and "GATEWAY_UNAVAILABLE" in result.output


def test_list_recent_payments_maps_sessions_for_reconcile(client, auth, fake_stripe):
    auth.register()
    paid_order, paid = paid_session(client, fake_stripe)
    _, open_order = start(client, "meal-pack-5")

    results = get_gateway("stripe").list_recent_payments(
        datetime.now(timezone.utc) - timedelta(hours=1))

    by_id = {r.gateway_order_id: r for r in results}
    p = by_id[paid["id"]]
    assert p.status == PAID and p.order_reference == paid_order.reference
    assert (p.metadata_user_id, p.metadata_plan_id) == (user().id, plan("lunch-monthly").id)
    assert (p.amount_minor, p.currency) == (299900, "INR")
    assert p.gateway_subscription_id == paid["subscription"]
    assert by_id[open_order.gateway_order_id].status == NOT_COMPLETED
