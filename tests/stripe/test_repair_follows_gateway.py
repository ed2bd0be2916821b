"""A subscription the repair tool re-creates still follows Stripe (issue 13, part 1).

The shop's subscription row is lost after a paid checkout; `flask fix subscriptions
--fix` (and utils/fix_failed_subscriptions.py) re-creates it. Stripe keeps billing
the customer, so its next renewal, cancellation and plan change arrive by webhook
and must find the repaired subscription.
"""
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, Order, Subscription, WebhookEvent
from tests.conftest import count, database_url, plan, user
from tests.ops.conftest import lose_subscription, remove_subscription
from tests.stripe.helpers import deliver, point_stripe_at, reload, subscribe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _lose_subscription(order: Order, *, forget_recorded_id: bool = True) -> None:
    lose_subscription(order, forget_recorded_id=forget_recorded_id)


def _repaired(order: Order) -> Subscription:
    db.session.expire_all()
    return db.session.scalars(sa.select(Subscription).where(Subscription.order_id == order.id)).one()


def _fix(runner, *args):
    result = runner.invoke(args=["fix", "subscriptions", "--fix", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _renewal_invoice(fake, stripe_sub_id):
    fake.advance_period(stripe_sub_id)
    return fake.invoice(stripe_sub_id, billing_reason="subscription_cycle", amount=299900)


def test_paid_order_records_the_stripe_subscription_id(client, auth, fake_stripe):
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    assert reload(order).gateway_data["gateway_subscription_id"] == session["subscription"]


@pytest.mark.parametrize("recorded", [False, True], ids=["asks_stripe", "from_the_order"])
def test_repair_links_the_stripe_subscription(client, auth, runner, fake_stripe, recorded):
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    _lose_subscription(order, forget_recorded_id=not recorded)
    before = len(fake_stripe.requests)

    code, out = _fix(runner)

    assert code == 0, out
    [result] = [r for r in out["results"] if r["kind"] == "missing_subscription"]
    assert result["changed"] and result["error"] is None
    assert result["diff"]["gateway_subscription_id"] == session["subscription"]
    sub = _repaired(order)
    remote = fake_stripe.subscriptions[session["subscription"]]["items"]["data"][0]
    assert sub.gateway_subscription_id == session["subscription"]
    assert sub.gateway_customer_id == session["customer"] and sub.status == "active"
    assert sub.current_period_end == _at(remote["current_period_end"])
    asked = fake_stripe.requests[before:]
    assert len(asked) == 1  # the gateway asked once (one session with its subscription expanded,
    assert asked[0][1] == (f"/v1/subscriptions/{session['subscription']}" if recorded
                           else f"/v1/checkout/sessions/{session['id']}")  # or the recorded id)


def test_repair_then_invoice_paid_renews(client, auth, runner, fake_stripe):
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    remove_subscription(order)  # just paid: the repair needs no grace period
    assert _fix(runner)[0] == 0

    invoice = _renewal_invoice(fake_stripe, session["subscription"])
    r, _ = deliver(client, fake_stripe, "invoice.paid", invoice)

    assert r.status_code == 200 and r.json["status"] == "processed", r.text
    renewal = db.session.scalars(sa.select(Order).where(Order.gateway_order_id == invoice["id"])).one()
    assert renewal.kind == "renewal" and renewal.status == "paid"
    assert renewal.parent_order_id == order.id
    sub = _repaired(order)
    assert sub.current_period_end == _at(invoice["lines"]["data"][0]["period"]["end"])
    assert user().plan_meal_credits == 20 and count(Subscription) == 1


def test_repair_then_subscription_deleted_cancels(client, auth, runner, fake_stripe):
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    _lose_subscription(order)
    assert _fix(runner)[0] == 0

    remote = dict(fake_stripe.subscriptions[session["subscription"]], status="canceled")
    r, _ = deliver(client, fake_stripe, "customer.subscription.deleted", remote)

    assert r.json["status"] == "processed"
    assert _repaired(order).status == "canceled" and user().subscription_status == "canceled"


def test_repair_then_plan_change_applies(client, auth, runner, fake_stripe):
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    _lose_subscription(order)
    assert _fix(runner)[0] == 0

    remote = fake_stripe.subscriptions[session["subscription"]]
    remote["items"]["data"][0]["price"] = fake_stripe.prices["price_family"]
    r, _ = deliver(client, fake_stripe, "customer.subscription.updated", remote)

    assert r.json["status"] == "processed"
    assert _repaired(order).meal_plan_id == plan("family-monthly").id
    assert user().plan_meal_credits == 40


def test_repair_follows_a_subscription_stripe_already_cancelled(client, auth, runner, fake_stripe):
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    _lose_subscription(order)
    fake_stripe.subscriptions[session["subscription"]]["status"] = "canceled"

    assert _fix(runner)[0] == 0

    sub = _repaired(order)
    assert sub.gateway_subscription_id == session["subscription"] and sub.status == "canceled"


def test_renewal_that_failed_before_the_repair_is_granted_by_it(client, auth, runner, fake_stripe):
    """invoice.paid arrived while the subscription was missing: stored failed. The
    repair links the subscription and re-runs it: the money taken is given."""
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    _lose_subscription(order)
    invoice = _renewal_invoice(fake_stripe, session["subscription"])
    r, event = deliver(client, fake_stripe, "invoice.paid", invoice)
    assert r.json["status"] == "failed"

    code, out = _fix(runner)

    assert code == 0, out
    stored = db.session.scalars(sa.select(WebhookEvent).where(
        WebhookEvent.event_id == event["id"])).one()
    assert stored.status == "processed"
    renewal = db.session.scalars(sa.select(Order).where(Order.gateway_order_id == invoice["id"])).one()
    assert renewal.status == "paid" and renewal.kind == "renewal"
    assert _repaired(order).current_period_end == _at(invoice["lines"]["data"][0]["period"]["end"])


# --- the monitor, and subscriptions an older repair left unlinked --------------------
def _unlink(order: Order) -> Subscription:
    """What the old repair tool produced: a live Stripe subscription with no Stripe id."""
    sub = _repaired(order)
    sub.gateway_subscription_id = None
    db.session.commit()
    return sub


def test_monitor_flags_a_live_stripe_subscription_without_its_id(client, auth, runner,
                                                                  fake_stripe):
    auth.register()
    order, _, _ = subscribe(client, fake_stripe)
    sub = _unlink(order)

    result = runner.invoke(args=["monitor", "check", "--json"])

    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    [finding] = [f for f in report["findings"] if f["check"] == "subscription_without_gateway_id"]
    assert finding["severity"] == "critical" and finding["key"].endswith(f":{sub.id}")
    assert "no stripe subscription id" in finding["summary"]
    assert order.reference in finding["summary"] and "\n" not in finding["summary"]
    table = runner.invoke(args=["monitor", "check"])
    assert "subscription_without_gateway_id" in table.stdout


def test_repair_links_an_unlinked_subscription_and_clears_the_finding(client, auth, runner,
                                                                       fake_stripe):
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    sub = _unlink(order)
    assert runner.invoke(args=["fix", "subscriptions", "--check"]).exit_code == 2
    dry = runner.invoke(args=["fix", "subscriptions", "--fix", "--dry-run"])
    assert dry.exit_code == 2 and order.reference in dry.stdout
    assert reload(sub).gateway_subscription_id is None

    code, out = _fix(runner)

    assert code == 0, out
    assert [r["kind"] for r in out["results"]] == ["unlinked_subscription"]
    assert reload(sub).gateway_subscription_id == session["subscription"]
    assert count(AuditLogEntry, AuditLogEntry.action == "subscription_linked_to_gateway") == 1
    assert runner.invoke(args=["monitor", "check"]).exit_code == 0
    again = runner.invoke(args=["fix", "subscriptions", "--fix"])
    assert again.exit_code == 0 and "0 changed" in again.stdout

    invoice = _renewal_invoice(fake_stripe, session["subscription"])
    r, _ = deliver(client, fake_stripe, "invoice.paid", invoice)
    assert r.json["status"] == "processed" and count(Order) == 2


def test_repair_when_stripe_cannot_be_asked_gives_access_and_keeps_the_finding(
        app, client, auth, runner, fake_stripe):
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    _lose_subscription(order)
    point_stripe_at(app)  # Stripe unreachable

    code, out = _fix(runner)

    assert code == 2
    [result] = [r for r in out["results"] if r["kind"] == "missing_subscription"]
    assert result["changed"] and "not linked" in result["error"]
    assert _repaired(order).status == "active" and user().subscription_status == "active"
    assert runner.invoke(args=["monitor", "check"]).exit_code == 2

    point_stripe_at(app, fake_stripe.url)  # Stripe is back: the next run links it
    assert _fix(runner)[0] == 0
    assert _repaired(order).gateway_subscription_id == session["subscription"]
    assert runner.invoke(args=["monitor", "check"]).exit_code == 0


def test_utils_script_repairs_and_links(app, client, auth, fake_stripe):
    """utils/fix_failed_subscriptions.py --fix, run as cron runs it, against the same database."""
    auth.register()
    order, session, _ = subscribe(client, fake_stripe)
    _lose_subscription(order)
    order_id = order.id
    db.session.remove()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "RAZORPAY_"))}
    env.update(TIFFIN_ENV="testing", DATABASE_URL=database_url(), SECRET_KEY="test-secret-key",
               STRIPE_SECRET_KEY="sk_test_tiffin", STRIPE_PUBLISHABLE_KEY="pk_test_tiffin",
               STRIPE_WEBHOOK_SECRET="whsec_current_secret", STRIPE_API_BASE=fake_stripe.url)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "utils", "fix_failed_subscriptions.py"),
                           "--fix"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _repaired(db.session.get(Order, order_id)).gateway_subscription_id == session["subscription"]
