"""--alert: findings reach email and a Slack-compatible webhook once, never silently dropped."""
from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, MonitorAlert, Order, User, utcnow
from tests.conftest import count
from tests.ops.conftest import hook_posts, remove_subscription


def test_alert_reaches_email_and_webhook_once(shop, runner, smtp_sink, alert_hook):
    remove_subscription(shop["asha"])
    first = runner.invoke(args=["monitor", "check", "--alert"])
    assert first.exit_code == 2, first.output
    [mail] = smtp_sink
    assert "CRITICAL" in mail["Subject"] and mail["To"] == "ops@tiffin.example"
    assert shop["asha"].reference in mail.get_payload()
    [post] = hook_posts(alert_hook)
    assert shop["asha"].reference in post["text"]
    assert count(AuditLogEntry, AuditLogEntry.action == "monitor_alert_sent") == 1

    second = runner.invoke(args=["monitor", "check", "--alert"])
    assert second.exit_code == 2 and "0 alerted" in second.stdout
    assert len(smtp_sink) == 1 and len(hook_posts(alert_hook)) == 1


def test_changed_finding_and_reminder_are_resent(shop, runner, alert_hook, app):
    db.session.execute(sa.update(User).where(User.id == shop["asha"].user_id)
                       .values(plan_meal_credits=3))
    db.session.commit()
    assert runner.invoke(args=["monitor", "check", "--alert"]).exit_code == 1
    db.session.execute(sa.update(User).where(User.id == shop["asha"].user_id)
                       .values(plan_meal_credits=4))  # the same finding, changed facts
    db.session.commit()
    runner.invoke(args=["monitor", "check", "--alert"])
    assert len(hook_posts(alert_hook)) == 2
    runner.invoke(args=["monitor", "check", "--alert"])
    assert len(hook_posts(alert_hook)) == 2
    db.session.execute(sa.update(MonitorAlert).values(
        last_sent_at=utcnow() - timedelta(hours=app.config["ALERT_REMINDER_HOURS"] + 1)))
    db.session.commit()
    runner.invoke(args=["monitor", "check", "--alert"])
    assert len(hook_posts(alert_hook)) == 3


def test_resolved_alert_is_closed_and_reopened_alert_resent(shop, runner, alert_hook):
    db.session.execute(sa.update(Order).where(Order.id == shop["asha"].id).values(status="failed"))
    db.session.commit()
    runner.invoke(args=["monitor", "check", "--alert"])
    db.session.execute(sa.update(Order).where(Order.id == shop["asha"].id).values(status="paid"))
    db.session.commit()
    assert runner.invoke(args=["monitor", "check", "--alert"]).exit_code == 0
    alert = db.session.scalars(sa.select(MonitorAlert)).one()
    assert alert.resolved_at is not None
    db.session.execute(sa.update(Order).where(Order.id == shop["asha"].id).values(status="failed"))
    db.session.commit()
    runner.invoke(args=["monitor", "check", "--alert"])
    assert len(hook_posts(alert_hook)) == 2


def test_undeliverable_alert_changes_exit_code_and_is_retried(shop, runner, app, httpserver):
    httpserver.expect_oneshot_request("/hooks/alerts").respond_with_data("down", status=500)
    httpserver.expect_request("/hooks/alerts").respond_with_data("ok")
    app.config["ALERT_WEBHOOK_URL"] = httpserver.url_for("/hooks/alerts")
    remove_subscription(shop["asha"])

    failed = runner.invoke(args=["monitor", "check", "--alert"])
    assert failed.exit_code == 2  # critical wins: the contract outside checks rely on
    assert "ALERT NOT SENT" in failed.stderr and "HTTP 500" in failed.stderr
    assert db.session.scalars(sa.select(MonitorAlert)).one().last_sent_at is None

    retried = runner.invoke(args=["monitor", "check", "--alert"])
    assert retried.exit_code == 2 and len(httpserver.log) == 2
    db.session.expire_all()
    assert db.session.scalars(sa.select(MonitorAlert)).one().last_sent_at is not None


def test_alert_without_destination_is_an_error(shop, runner, app):
    app.config.update(ALERT_EMAIL="", ALERT_WEBHOOK_URL="")
    remove_subscription(shop["asha"])
    result = runner.invoke(args=["monitor", "check", "--alert"])
    assert result.exit_code == 2 and "no alert destination configured" in result.stderr


def test_smtp_down_is_reported(shop, runner, app):
    from tests.ops.conftest import _free_port

    app.config.update(ALERT_EMAIL="ops@tiffin.example", MAIL_SERVER="127.0.0.1",
                      MAIL_PORT=_free_port(), MAIL_TIMEOUT_SECONDS=2)
    remove_subscription(shop["asha"])
    result = runner.invoke(args=["monitor", "check", "--alert"])
    assert result.exit_code == 2 and "alert via email failed" in result.stderr


def test_undeliverable_alert_turns_warnings_only_into_exit_3(shop, runner, app, httpserver):
    httpserver.expect_request("/hooks/alerts").respond_with_data("down", status=500)
    app.config["ALERT_WEBHOOK_URL"] = httpserver.url_for("/hooks/alerts")
    stale = Order(user_id=shop["asha"].user_id, meal_plan_id=shop["asha"].meal_plan_id,
                  gateway="test", gateway_order_id="tgo_stale", amount_minor=1, currency="INR",
                  created_at=utcnow() - timedelta(days=2))
    db.session.add(stale)
    db.session.commit()

    quiet = runner.invoke(args=["monitor", "check"])
    assert quiet.exit_code == 1  # warnings only
    result = runner.invoke(args=["monitor", "check", "--alert"])
    assert result.exit_code == 3 and "ALERT NOT SENT" in result.stderr


def test_healthy_run_sends_nothing(shop, runner, alert_hook):
    assert runner.invoke(args=["monitor", "check", "--alert"]).exit_code == 0
    assert hook_posts(alert_hook) == []
