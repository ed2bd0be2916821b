"""Refunds (operator command and webhook), disputes, `flask razorpay sync-plans`, reconcile listing."""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from app.extensions import db
from app.gateways import get_gateway
from app.gateways.base import PAID
from app.models import MealPlan, NotificationOutbox, Order, Subscription
from tests.conftest import count, user
from tests.razorpay.conftest import order_row


def _paid(shop, fake, slug="meal-pack-5"):
    order_id, _ = shop.start(slug)
    payment = fake.pay_order(order_id) if not order_id.startswith("sub_") \
        else fake.charge_subscription(order_id)
    if order_id.startswith("sub_"):
        shop.verify_subscription(order_id, payment["id"])
    else:
        shop.verify(order_id, payment["id"])
    order = order_row(order_id)
    assert order.status == "paid"
    return order, payment


def test_full_refund_command_sends_idempotency_key_and_revokes_access(shop, razorpay_fake, runner,
                                                                        synced_plans):
    order, payment = _paid(shop, razorpay_fake, "lunch-monthly")

    result = runner.invoke(args=["orders", "refund", order.reference])

    assert result.exit_code == 0, result.output
    assert "processed" in result.output and "refunded" in result.output
    call = razorpay_fake.calls("POST", f"/v1/payments/{payment['id']}/refund")[0]
    assert call["json"]["amount"] == 299900
    key = call["headers"]["X-Refund-Idempotency"]
    assert len(key) >= 10 and order.reference in key
    order = order_row(order.gateway_order_id)
    assert order.status == "refunded" and order.refunded_minor == 299900
    db.session.expire_all()
    sub = db.session.scalars(sa.select(Subscription)).one()
    assert sub.status == "revoked" and user().plan_meal_credits == 0

    # Razorpay's refund.processed webhook for the same refund changes nothing more.
    refund = razorpay_fake.refunds[next(iter(razorpay_fake.refunds))]
    r = shop.webhook("refund.processed", refund=refund,
                     payment=razorpay_fake.payments[payment["id"]])
    assert r.status_code == 200 and order_row(order.gateway_order_id).refunded_minor == 299900
    assert count(NotificationOutbox, NotificationOutbox.kind == "refund") == 1


def test_partial_refund_command_keeps_access(shop, razorpay_fake, runner, synced_plans):
    order, payment = _paid(shop, razorpay_fake, "lunch-monthly")

    result = runner.invoke(args=["orders", "refund", order.reference, "--amount", "50000"])

    assert result.exit_code == 0, result.output
    order = order_row(order.gateway_order_id)
    assert order.status == "partially_refunded" and order.refunded_minor == 50000
    db.session.expire_all()
    assert db.session.scalars(sa.select(Subscription)).one().status == "active"
    assert user().plan_meal_credits == 20
    assert razorpay_fake.payments[payment["id"]]["amount_refunded"] == 50000


def test_refund_command_refuses_too_much_and_unknown_orders(shop, razorpay_fake, runner):
    order, _ = _paid(shop, razorpay_fake)

    too_much = runner.invoke(args=["orders", "refund", order.reference, "--amount", "79901"])
    unknown = runner.invoke(args=["orders", "refund", "TF-000000000000"])

    assert too_much.exit_code == 1 and "1..79900" in too_much.output
    assert unknown.exit_code == 1 and "no order" in unknown.output
    assert razorpay_fake.calls("POST", r"/v1/payments/.*/refund") == []


def test_pending_refund_is_recorded_when_its_webhook_arrives(shop, razorpay_fake, runner):
    order, payment = _paid(shop, razorpay_fake)
    razorpay_fake.refund_status = "pending"

    result = runner.invoke(args=["orders", "refund", order.reference, "--amount", "30000"])
    assert result.exit_code == 0 and "pending" in result.output
    assert order_row(order.gateway_order_id).status == "paid"
    # Re-running before it lands reuses the same idempotency key: no second refund.
    runner.invoke(args=["orders", "refund", order.reference, "--amount", "30000"])
    assert len(razorpay_fake.refunds) == 1

    refund = next(iter(razorpay_fake.refunds.values()))
    refund["status"] = "processed"
    shop.webhook("refund.processed", refund=refund, payment=razorpay_fake.payments[payment["id"]])

    order = order_row(order.gateway_order_id)
    assert order.status == "partially_refunded" and order.refunded_minor == 30000


def test_full_refund_from_the_dashboard_webhook_revokes_access(shop, razorpay_fake, synced_plans):
    order, payment = _paid(shop, razorpay_fake, "lunch-monthly")
    refund = razorpay_fake.refund_outside(payment["id"], 299900)

    r = shop.webhook("refund.processed", refund=refund, payment=razorpay_fake.payments[payment["id"]])

    assert r.status_code == 200 and order_row(order.gateway_order_id).status == "refunded"
    db.session.expire_all()
    assert db.session.scalars(sa.select(Subscription)).one().status == "revoked"


def test_dispute_revokes_access_at_once(shop, razorpay_fake, synced_plans):
    order, payment = _paid(shop, razorpay_fake, "lunch-monthly")
    dispute = razorpay_fake.dispute(payment["id"])

    r = shop.webhook("payment.dispute.created", dispute=dispute, payment=payment)
    shop.webhook("payment.dispute.created", dispute=dispute, payment=payment)

    assert r.status_code == 200 and order_row(order.gateway_order_id).status == "disputed"
    db.session.expire_all()
    sub = db.session.scalars(sa.select(Subscription)).one()
    assert sub.status == "revoked" and sub.revoke_reason == "disputed"
    assert count(NotificationOutbox, NotificationOutbox.kind == "dispute") == 1


def test_sync_plans_creates_once_then_changes_nothing(app, runner, razorpay_fake):
    first = runner.invoke(args=["razorpay", "sync-plans"])
    second = runner.invoke(args=["razorpay", "sync-plans"])

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert first.output.count("(created)") == 3 and second.output.count("(unchanged)") == 3
    assert len(razorpay_fake.plans) == 3
    lunch = db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == "lunch-monthly")).one()
    remote = razorpay_fake.plans[lunch.razorpay_plan_id]
    assert remote["period"] == "monthly" and remote["interval"] == 1
    assert remote["item"]["amount"] == 299900 and remote["item"]["currency"] == "INR"
    trial = db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == "trial-week")).one()
    assert razorpay_fake.plans[trial.razorpay_plan_id]["period"] == "weekly"


def test_sync_plans_after_a_price_change_creates_a_new_plan(app, runner, razorpay_fake):
    runner.invoke(args=["razorpay", "sync-plans"])
    lunch = db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == "lunch-monthly")).one()
    old_id = lunch.razorpay_plan_id
    lunch.price_minor = 319900
    db.session.commit()

    result = runner.invoke(args=["razorpay", "sync-plans"])

    assert result.exit_code == 0 and "lunch-monthly" in result.output
    db.session.expire_all()
    assert lunch.razorpay_plan_id != old_id
    assert razorpay_fake.plans[lunch.razorpay_plan_id]["item"]["amount"] == 319900


def test_sync_plans_reports_razorpay_refusing(app, runner, razorpay_fake):
    razorpay_fake.key_secret = "rotated-elsewhere"  # our key no longer authenticates

    result = runner.invoke(args=["razorpay", "sync-plans"])

    assert result.exit_code == 1 and "Razorpay refused" in result.output


def test_list_recent_payments_for_reconcile(shop, razorpay_fake, synced_plans):
    order_id, _ = shop.start()
    pack = razorpay_fake.pay_order(order_id)
    sub_id, _ = shop.start("lunch-monthly")
    charge = razorpay_fake.charge_subscription(sub_id)

    results = get_gateway("razorpay").list_recent_payments(
        datetime.now(timezone.utc) - timedelta(days=30))

    by_id = {r.gateway_payment_id: r for r in results}
    assert set(by_id) == {pack["id"], charge["id"]}
    assert by_id[pack["id"]].gateway_order_id == order_id and by_id[pack["id"]].status == PAID
    assert by_id[pack["id"]].amount_minor == 79900 and by_id[pack["id"]].currency == "INR"
    assert by_id[charge["id"]].gateway_subscription_id == sub_id
    assert razorpay_fake.calls("GET", "/v1/payments")[0]["args"]["count"] == "100"
    assert count(Order) == 2
    of_order = get_gateway("razorpay").order_payments(order_id)
    assert [(r.gateway_payment_id, r.status, r.gateway_order_id) for r in of_order] == [
        (pack["id"], PAID, order_id)]


def test_sync_plans_without_razorpay_configured_exits_1(app, runner):
    app.config["RAZORPAY_KEY_ID"] = ""

    result = runner.invoke(args=["razorpay", "sync-plans"])

    assert result.exit_code == 1 and "GATEWAY_NOT_CONFIGURED" in result.output
