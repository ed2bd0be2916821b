"""Each monitor check finds a planted problem of its kind, and nothing in a healthy shop."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import MonitorRun, NotificationOutbox, Order, Subscription, User, WebhookEvent, utcnow
from app.services import monitoring
from tests.conftest import count
from tests.ops.conftest import (LIVE_INDEX, found_checks, make_user, monitor_json, pending_order,
                                remove_subscription, sub_of, webhook_event)


def test_healthy_shop_has_no_findings(shop, runner):
    code, report = monitor_json(runner, "--check")
    assert code == 0, report
    assert report["findings"] == [] and found_checks(report) == {}
    assert count(MonitorRun, MonitorRun.exit_code == 0) == 1


def test_table_output_and_help(shop, runner):
    assert "Exit codes" in runner.invoke(args=["monitor", "check", "--help"]).output
    healthy = runner.invoke(args=["monitor", "check"])
    assert healthy.exit_code == 0 and "healthy" in healthy.stdout
    remove_subscription(shop["asha"])
    problem = runner.invoke(args=["monitor", "check"])
    assert problem.exit_code == 2
    assert "SEVERITY" in problem.stdout and shop["asha"].reference in problem.stdout


def _missing_subscription(shop):
    remove_subscription(shop["asha"])


def _needs_review(shop):
    order = pending_order(shop["asha_user"], failure_code="PAYMENT_AMOUNT_MISMATCH")
    order.status = "needs_review"
    db.session.commit()


def _orphan(shop):
    db.session.execute(sa.update(Order).where(Order.id == shop["asha"].id).values(status="failed"))
    db.session.commit()


def _two_live(shop):
    db.session.execute(sa.text("DROP INDEX uq_subscriptions_one_live_per_user"))
    sub = sub_of(shop["ben"])
    db.session.add(Subscription(user_id=sub.user_id, meal_plan_id=sub.meal_plan_id,
                                order_id=shop["pack"].id, gateway="test", status="active",
                                current_period_start=sub.current_period_start,
                                current_period_end=sub.current_period_end))
    db.session.commit()


def _status_drift(shop):
    db.session.execute(sa.update(User).where(User.id == shop["asha"].user_id)
                       .values(subscription_status="canceled"))
    db.session.commit()


def _credit_drift(shop):
    db.session.execute(sa.update(User).where(User.id == shop["ben"].user_id)
                       .values(addon_meal_credits=User.addon_meal_credits + 7))
    db.session.commit()


def _user_mismatch(shop):
    other = make_user("carol@example.com")
    db.session.execute(sa.update(Order).where(Order.id == shop["asha"].id)
                       .values(gateway_metadata_user_id=other.id))
    db.session.commit()


def _dead_webhook(shop):
    webhook_event(status="dead", attempts=8)


def _failed_webhook(shop):
    webhook_event(status="failed", attempts=2)


def _stuck_webhook(shop):
    webhook_event(status="received", received_ago=timedelta(hours=1))


def _quiet_gateway(shop):
    db.session.execute(sa.update(WebhookEvent).values(received_at=utcnow() - timedelta(hours=10)))
    order = pending_order(shop["asha_user"], "meal-pack-5")
    order.created_at = utcnow() - timedelta(hours=1)
    db.session.commit()


def _authorized(shop):
    pending_order(shop["asha_user"], authorized_at=utcnow() - timedelta(hours=60),
                  created_at=utcnow() - timedelta(hours=60))


def _outbox(shop):
    db.session.execute(sa.update(NotificationOutbox).where(NotificationOutbox.id == db.session.scalar(
        sa.select(sa.func.min(NotificationOutbox.id)))).values(status="failed", attempts=5))
    db.session.commit()


def _pending_too_long(shop):
    pending_order(shop["asha_user"], created_at=utcnow() - timedelta(hours=30))


PLANTED = [
    (_missing_subscription, "paid_without_subscription", 2),
    (_needs_review, "order_needs_review", 2),
    (_orphan, "orphan_subscription", 1),
    (_two_live, "multiple_live_subscriptions", 1),
    (_status_drift, "user_status_drift", 1),
    (_credit_drift, "user_status_drift", 1),
    (_user_mismatch, "payment_user_mismatch", 2),
    (_dead_webhook, "webhook_events", 2),
    (_failed_webhook, "webhook_events", 1),
    (_stuck_webhook, "webhook_events", 1),
    (_quiet_gateway, "gateway_webhooks_quiet", 2),
    (_authorized, "authorized_not_captured", 2),
    (_outbox, "notification_outbox", 1),
    (_pending_too_long, "order_pending_too_long", 1),
]


@pytest.mark.parametrize("plant, check, exit_code", PLANTED, ids=[p[0].__name__ for p in PLANTED])
def test_each_check_finds_its_planted_problem(shop, runner, plant, check, exit_code):
    plant(shop)
    try:
        code, report = monitor_json(runner, "--check")
        assert found_checks(report) == {check: 1}, report["findings"]
        assert code == exit_code
        finding = report["findings"][0]
        assert finding["key"].startswith(check + ":") and finding["severity"] in (
            "critical", "warning")
    finally:
        if plant is _two_live:
            db.session.execute(sa.delete(Subscription).where(Subscription.order_id == shop["pack"].id))
            db.session.execute(sa.text(LIVE_INDEX))
            db.session.commit()


def test_since_limits_the_window(shop, runner):
    _pending_too_long(shop)
    assert found_checks(monitor_json(runner, "--since", "24h")[1]) == {}
    assert found_checks(monitor_json(runner, "--since", "2d")[1]) == {"order_pending_too_long": 1}
    bad = runner.invoke(args=["monitor", "check", "--since", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_recently_paid_order_is_not_yet_reported(shop, runner):
    """A webhook may still be creating the subscription: give it the grace period."""
    remove_subscription(shop["asha"])
    db.session.execute(sa.update(Order).where(Order.id == shop["asha"].id).values(paid_at=utcnow()))
    db.session.commit()
    assert found_checks(monitor_json(runner)[1]) == {}


def test_findings_are_capped_per_check(shop, runner, app):
    app.config["MONITOR_MAX_FINDINGS_PER_CHECK"] = 2
    for _ in range(3):
        _pending_too_long(shop)
    code, report = monitor_json(runner)
    assert report["counts"]["order_pending_too_long"] == 3
    keys = [f["key"] for f in report["findings"]]
    assert len(keys) == 3 and keys[-1] == "order_pending_too_long:more"


def test_every_check_is_one_query(shop, app):
    """Set-based: each check issues exactly one SELECT, whatever the number of rows."""
    for _ in range(5):
        _pending_too_long(shop)
    statements = []

    def remember(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", remember)
    try:
        for check in monitoring.CHECKS:
            statements.clear()
            monitoring.run_check(check)
            selects = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
            assert len(selects) == 1, check.name
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", remember)
