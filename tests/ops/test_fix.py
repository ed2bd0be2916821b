"""Repairs: each fixes its problem, a second run finds nothing, --dry-run changes nothing."""
import json

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, Order, Subscription, User
from app.services.job_lock import job_lock
from tests.conftest import count
from tests.ops.conftest import found_checks, make_user, monitor_json, remove_subscription, sub_of


def _snapshot():
    return (count(Subscription), count(AuditLogEntry), count(CreditLedgerEntry),
            db.session.execute(sa.select(User.id, User.subscription_status, User.plan_meal_credits,
                                         User.addon_meal_credits).order_by(User.id)).all())


def test_fix_creates_missing_subscription(shop, runner):
    remove_subscription(shop["asha"])
    assert runner.invoke(args=["fix", "subscriptions", "--check"]).exit_code == 2

    before = _snapshot()
    dry = runner.invoke(args=["fix", "subscriptions", "--fix", "--dry-run"])
    assert dry.exit_code == 2 and shop["asha"].reference in dry.stdout
    db.session.expire_all()
    assert _snapshot() == before

    fixed = runner.invoke(args=["fix", "subscriptions", "--fix", "--json"])
    assert fixed.exit_code == 0, fixed.output
    results = json.loads(fixed.stdout)["results"]
    assert [r["kind"] for r in results] == ["missing_subscription"] and results[0]["changed"]
    db.session.expire_all()
    sub = sub_of(shop["asha"])
    owner = db.session.get(User, shop["asha"].user_id)
    assert sub is not None and sub.status == "active" and owner.subscription_status == "active"
    assert db.session.get(Order, shop["asha"].id).status == "paid"
    assert count(AuditLogEntry, AuditLogEntry.action == "order_reopened_for_repair") == 1
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled",
                 AuditLogEntry.actor == "cli:fix") == 1

    assert runner.invoke(args=["fix", "subscriptions", "--check"]).exit_code == 0
    again = runner.invoke(args=["fix", "subscriptions", "--fix"])
    assert again.exit_code == 0 and "0 changed" in again.stdout
    assert found_checks(monitor_json(runner)[1]) == {}


def test_late_webhook_after_fix_changes_nothing(shop, runner, client):
    from app.gateways import get_gateway

    remove_subscription(shop["asha"])
    assert runner.invoke(args=["fix", "subscriptions", "--fix"]).exit_code == 0
    before = _snapshot()
    order = db.session.get(Order, shop["asha"].id)
    body = get_gateway("test").build_event(
        {"order_id": order.gateway_order_id, "reference": order.reference,
         "amount_minor": order.amount_minor, "currency": order.currency,
         "user_id": order.user_id, "plan_id": order.meal_plan_id}, "payment.succeeded",
        payment_id=order.gateway_payment_id)
    hook = client.post("/webhooks/test", data=body, headers={
        "Content-Type": "application/json",
        "X-Test-Gateway-Signature": get_gateway("test").sign_body(body)})
    assert hook.status_code == 200
    db.session.expire_all()
    assert count(Subscription) == before[0] and count(CreditLedgerEntry) == before[2]
    assert count(Subscription, Subscription.order_id == order.id) == 1


def test_fix_repairs_status_drift(shop, runner):
    db.session.execute(sa.update(User).where(User.id == shop["asha"].user_id)
                       .values(subscription_status="none", plan_meal_credits=3))
    db.session.commit()
    assert runner.invoke(args=["fix", "subscriptions", "--check"]).exit_code == 1
    assert runner.invoke(args=["fix", "subscriptions", "--fix"]).exit_code == 0
    db.session.expire_all()
    asha = db.session.get(User, shop["asha"].user_id)
    assert asha.subscription_status == "active" and asha.plan_meal_credits == 20
    assert count(AuditLogEntry, AuditLogEntry.action == "user_status_repaired") == 1
    assert runner.invoke(args=["fix", "subscriptions", "--check"]).exit_code == 0


def test_fix_needs_a_mode(shop, runner):
    result = runner.invoke(args=["fix", "subscriptions"])
    assert result.exit_code == 2 and "--check or --fix" in result.output


def test_sync_status_dry_run_shows_diff_then_syncs(shop, runner):
    db.session.execute(sa.update(User).where(User.id == shop["ben"].user_id)
                       .values(subscription_status="past_due", addon_meal_credits=0))
    db.session.commit()
    before = _snapshot()
    dry = runner.invoke(args=["fix", "sync-status", "--dry-run", "--json"])
    assert dry.exit_code == 1
    [result] = json.loads(dry.stdout)["results"]
    assert result["diff"] == {"subscription_status": {"old": "past_due", "new": "active"},
                              "addon_meal_credits": {"old": 0, "new": 5}}
    db.session.expire_all()
    assert _snapshot() == before

    # `--fix` is accepted too (as for `fix subscriptions`); repairing is the default.
    assert runner.invoke(args=["fix", "sync-status", "--fix"]).exit_code == 0
    db.session.expire_all()
    ben = db.session.get(User, shop["ben"].user_id)
    assert ben.subscription_status == "active" and ben.addon_meal_credits == 5
    again = runner.invoke(args=["fix", "sync-status", "--dry-run"])
    assert again.exit_code == 0 and "0 item(s)" in again.stdout


def test_move_paid_order_to_the_right_user(shop, runner):
    carol = make_user("carol@example.com")
    order = shop["asha"]
    db.session.execute(sa.update(Order).where(Order.id == order.id)
                       .values(gateway_metadata_user_id=carol.id))
    db.session.commit()
    code, report = monitor_json(runner)
    assert found_checks(report) == {"payment_user_mismatch": 1} and code == 2

    before = _snapshot()
    dry = runner.invoke(args=["fix", "payment-user-mismatch", "--order", order.reference,
                              "--user", "carol@example.com", "--dry-run"])
    assert dry.exit_code == 0 and order.reference in dry.stdout
    db.session.expire_all()
    assert _snapshot() == before

    moved = runner.invoke(args=["fix", "payment-user-mismatch", "--order", order.reference,
                                "--user", "Carol@Example.com"])
    assert moved.exit_code == 0, moved.output
    db.session.expire_all()
    asha, carol = db.session.get(User, shop["asha_user"].id), db.session.get(User, carol.id)
    assert db.session.get(Order, order.id).user_id == carol.id
    assert sub_of(order).user_id == carol.id
    assert (carol.subscription_status, carol.plan_meal_credits) == ("active", 20)
    assert (asha.subscription_status, asha.plan_meal_credits) == ("none", 0)
    trail = db.session.scalars(sa.select(AuditLogEntry).where(
        AuditLogEntry.action == "order_moved_to_user")).one()
    assert trail.details["from_user_id"] == asha.id and trail.details["to_user_id"] == carol.id
    assert found_checks(monitor_json(runner)[1]) == {}

    again = runner.invoke(args=["fix", "payment-user-mismatch", "--order", order.reference,
                                "--user", "carol@example.com"])
    assert again.exit_code == 0 and "nothing to do" in again.stdout


def test_move_refuses_what_it_cannot_do(shop, runner):
    refused = runner.invoke(args=["fix", "payment-user-mismatch", "--order", shop["asha"].reference,
                                  "--user", "ben@example.com"])
    assert refused.exit_code == 2 and "already has a live subscription" in refused.output
    unknown = runner.invoke(args=["fix", "payment-user-mismatch", "--order", "TF-NOPE",
                                  "--user", "ben@example.com"])
    assert unknown.exit_code == 2 and "no order" in unknown.output


def test_a_held_lock_stops_a_second_run(shop, runner):
    remove_subscription(shop["asha"])
    with job_lock("fix"):
        blocked = runner.invoke(args=["fix", "subscriptions", "--fix"])
    assert blocked.exit_code == 4 and "already running" in blocked.output
    assert sub_of(shop["asha"]) is None
    assert runner.invoke(args=["fix", "subscriptions", "--fix"]).exit_code == 0


def test_a_crashed_runs_expired_lock_is_taken_over(shop, runner):
    from datetime import timedelta

    from app.models import JobLock, utcnow

    db.session.add(JobLock(name="fix", holder="dead-host:1", expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    remove_subscription(shop["asha"])
    assert runner.invoke(args=["fix", "subscriptions", "--fix"]).exit_code == 0
    assert count(JobLock) == 0  # released after the run
