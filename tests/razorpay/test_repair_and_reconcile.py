"""Razorpay subscriptions under the operator tools (issue 13, parts 1 and 3).

Part 1: a subscription `flask fix subscriptions --fix` re-creates is linked to the
Razorpay subscription, so renewals, cancellations and plan changes still reach it.
Part 3: when the checkout callback and every webhook of an activation were lost,
`flask reconcile --fix` settles the pending order (never a second one), and the late
`subscription.charged` and the late callback are harmless and show success.
"""
import json
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import CreditLedgerEntry, Order, Subscription, WebhookEvent
from tests.conftest import count, plan, user
from tests.ops.conftest import lose_subscription
from tests.razorpay.conftest import order_row


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _subscription() -> Subscription:
    db.session.expire_all()
    return db.session.scalars(sa.select(Subscription)).one()


def _activate(shop, fake):
    sub_id, _ = shop.start("lunch-monthly")
    payment = fake.charge_subscription(sub_id)
    r = shop.verify_subscription(sub_id, payment["id"], follow=True)
    assert r.status_code == 200 and "your payment is confirmed" in r.text
    return sub_id, payment


def _event(response) -> WebhookEvent:
    db.session.expire_all()
    return db.session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id.desc())).first()


def _money_findings(runner) -> dict:
    """The monitor's counts for the checks this issue is about (others may fire in a test)."""
    report = json.loads(runner.invoke(args=["monitor", "check", "--json"]).stdout)
    return {k: v for k, v in report["counts"].items() if v and k in (
        "subscription_without_gateway_id", "paid_without_subscription", "order_needs_review",
        "webhook_events", "multiple_live_subscriptions", "order_pending_too_long")}


def _fix(runner):
    result = runner.invoke(args=["fix", "subscriptions", "--fix", "--json"])
    return result.exit_code, json.loads(result.stdout)


# --- part 1: repair, then the gateway's events -------------------------------------
@pytest.fixture
def repaired(shop, razorpay_fake, runner, synced_plans):
    """An activated Razorpay plan whose subscription row was lost, then repaired."""
    sub_id, payment = _activate(shop, razorpay_fake)
    lose_subscription(order_row(sub_id))
    assert runner.invoke(args=["monitor", "check"]).exit_code == 2
    code, out = _fix(runner)
    assert code == 0, out
    return sub_id, payment


def test_repair_links_the_razorpay_subscription_with_its_period(repaired, razorpay_fake, runner):
    sub_id, _ = repaired
    sub = _subscription()
    remote = razorpay_fake.subscriptions[sub_id]
    assert sub.gateway_subscription_id == sub_id and sub.status == "active"
    assert sub.current_period_end == _at(remote["current_end"])
    assert sub.gateway_customer_id == remote["customer_id"]
    assert len(razorpay_fake.calls("GET", f"/v1/subscriptions/{sub_id}")) >= 1
    assert _money_findings(runner) == {}


def test_repair_then_subscription_charged_renews(repaired, shop, razorpay_fake):
    sub_id, _ = repaired
    renewal = razorpay_fake.charge_subscription(sub_id)

    r = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                     payment=renewal)

    assert r.status_code == 200 and _event(r).status == "processed"
    order = db.session.scalars(sa.select(Order).where(Order.kind == "renewal")).one()
    assert order.status == "paid" and order.gateway_payment_id == renewal["id"]
    assert _subscription().current_period_end == _at(razorpay_fake.subscriptions[sub_id]["current_end"])
    assert user().plan_meal_credits == 20


def test_repair_then_subscription_cancelled_cancels(repaired, shop, razorpay_fake):
    sub_id, _ = repaired
    cancelled = razorpay_fake.set_subscription_status(sub_id, "cancelled")

    r = shop.webhook("subscription.cancelled", subscription=cancelled)

    assert r.status_code == 200 and _event(r).status == "processed"
    assert _subscription().status == "canceled"


def test_repair_then_plan_change_reaches_razorpay(repaired, shop, razorpay_fake):
    """The shopper's plan change goes to the linked Razorpay subscription (when it takes
    effect locally is the plan-change flow's business, not the repair's)."""
    sub_id, _ = repaired

    r = shop.client.post("/account/subscription/change", data={"plan": "family-monthly"})

    assert r.status_code == 303
    [edit] = razorpay_fake.calls("PATCH", f"/v1/subscriptions/{sub_id}")
    assert edit["json"]["plan_id"] == plan("family-monthly").razorpay_plan_id


def test_monitor_flags_and_repair_links_an_unlinked_razorpay_subscription(
        shop, razorpay_fake, runner, synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)
    sub = _subscription()
    sub.gateway_subscription_id = None  # what the old repair tool left
    db.session.commit()

    report = json.loads(runner.invoke(args=["monitor", "check", "--json"]).stdout)
    [finding] = [f for f in report["findings"] if f["check"] == "subscription_without_gateway_id"]
    assert report["exit_code"] == 2 and finding["severity"] == "critical"
    assert "no razorpay subscription id" in finding["summary"]

    code, out = _fix(runner)

    assert code == 0, out
    assert _subscription().gateway_subscription_id == sub_id
    assert _money_findings(runner) == {}


# --- part 3: reconcile after a lost callback and lost webhooks ------------------------
@pytest.mark.parametrize("notes", [True, False], ids=["payment_with_notes", "payment_without_notes"])
def test_reconcile_settles_the_pending_activation_order_once(shop, razorpay_fake, runner,
                                                             synced_plans, notes):
    sub_id, _ = shop.start("lunch-monthly")
    pending = order_row(sub_id)
    if notes:  # Razorpay copies the subscription's notes onto its charges
        razorpay_fake.payment_notes = dict(razorpay_fake.subscriptions[sub_id]["notes"])
    payment = razorpay_fake.charge_subscription(sub_id)  # callback and webhooks lost
    assert runner.invoke(args=["reconcile", "--since", "1h"]).exit_code == 2

    fixed = runner.invoke(args=["reconcile", "--since", "1h", "--fix", "--json"])

    assert fixed.exit_code == 0, fixed.output
    [item] = json.loads(fixed.stdout)["discrepancies"]
    assert item["fixed"] and item["reference"] == pending.reference
    assert item["gateway_order_id"] == sub_id
    order = db.session.scalars(sa.select(Order)).one()  # exactly one order, the one that existed
    assert order.id == pending.id and order.status == "paid"
    assert order.gateway_payment_id == payment["id"]
    sub = _subscription()
    assert sub.gateway_subscription_id == sub_id and sub.order_id == pending.id
    assert sub.current_period_end == _at(razorpay_fake.subscriptions[sub_id]["current_end"])
    assert user().plan_meal_credits == 20 and count(CreditLedgerEntry) == 1

    # The late subscription.charged: processed, nothing new.
    r = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                     payment=payment)
    assert r.status_code == 200 and _event(r).status == "processed"
    r = shop.webhook("payment.captured", payment=payment)
    assert r.status_code == 200 and _event(r).status in ("processed", "ignored")
    assert count(Order) == 1 and count(CreditLedgerEntry) == 1

    # The late callback: the shopper sees their payment confirmed.
    page = shop.verify_subscription(sub_id, payment["id"], follow=True)
    assert page.status_code == 200 and "your payment is confirmed" in page.text
    assert pending.reference in page.text
    assert count(Order) == 1 and count(CreditLedgerEntry) == 1
    assert runner.invoke(args=["reconcile", "--since", "1h"]).exit_code == 0
    assert _money_findings(runner) == {}


def test_reconcile_records_a_lost_renewal_as_a_renewal(shop, razorpay_fake, runner, synced_plans):
    sub_id, _ = _activate(shop, razorpay_fake)
    renewal = razorpay_fake.charge_subscription(sub_id)  # its webhook lost

    fixed = runner.invoke(args=["reconcile", "--since", "1h", "--fix"])

    assert fixed.exit_code == 0, fixed.output
    order = db.session.scalars(sa.select(Order).where(Order.kind == "renewal")).one()
    assert order.gateway_payment_id == renewal["id"] and order.status == "paid"
    assert _subscription().current_period_end == _at(razorpay_fake.subscriptions[sub_id]["current_end"])
    r = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                     payment=renewal)
    assert r.status_code == 200 and _event(r).status == "processed" and count(Order) == 2


def test_late_charge_for_a_payment_recorded_on_another_order_is_processed(shop, razorpay_fake,
                                                                         synced_plans):
    """Data an older reconcile left: the activation's payment on a second, paid order.
    The late subscription.charged is acknowledged as processed, never failed for ever."""
    sub_id, _ = shop.start("lunch-monthly")
    pending = order_row(sub_id)
    payment = razorpay_fake.charge_subscription(sub_id)
    db.session.add(Order(user_id=pending.user_id, meal_plan_id=pending.meal_plan_id,
                         gateway="razorpay", gateway_order_id=payment["order_id"],
                         gateway_payment_id=payment["id"], amount_minor=pending.amount_minor,
                         currency=pending.currency, status="paid",
                         paid_at=datetime.now(timezone.utc)))
    db.session.commit()

    r = shop.webhook("subscription.charged", subscription=razorpay_fake.subscriptions[sub_id],
                     payment=payment)

    assert r.status_code == 200 and _event(r).status == "processed"
    assert count(Order) == 2
