"""`flask db upgrade` on an empty database builds exactly what the models describe."""
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flask(url, *args):
    env = {**os.environ, "DATABASE_URL": url, "FLASK_APP": "wsgi", "TIFFIN_ENV": "development",
           "STRIPE_SECRET_KEY": "", "RAZORPAY_KEY_ID": ""}
    return subprocess.run([sys.executable, "-m", "flask", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_upgrade_matches_models(url):
    up = _flask(url, "db", "upgrade")
    assert up.returncode == 0, up.stderr
    check = _flask(url, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    engine = sa.create_engine(url)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert {"users", "meal_plans", "orders", "subscriptions", "webhook_events", "audit_log",
            "credit_ledger", "webhook_delivery_attempts", "notification_outbox"} <= tables


def test_upgrade_on_empty_sqlite(tmp_path):
    _assert_upgrade_matches_models(f"sqlite:///{tmp_path}/empty.db")


def test_upgrade_on_empty_postgresql(pg_only):
    base = os.environ["DATABASE_URL"]
    name = f"tiffin_mig_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        _assert_upgrade_matches_models(base.rsplit("/", 1)[0] + "/" + name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_one_live_subscription_per_user_is_enforced_by_the_database(app):
    from app.extensions import db
    from app.models import Order, Subscription, User
    from app.models.types import utcnow
    from tests.conftest import plan

    u = User(email="x@example.com", name="X", password_hash="-")
    db.session.add(u)
    db.session.flush()
    p = plan("lunch-monthly")
    orders = [Order(user_id=u.id, meal_plan_id=p.id, gateway="test", gateway_order_id=f"o{i}",
                    amount_minor=1, currency="INR") for i in range(3)]
    db.session.add_all(orders)
    db.session.flush()
    now = utcnow()
    db.session.add(Subscription(user_id=u.id, meal_plan_id=p.id, order_id=orders[0].id,
                                gateway="test", status="canceled", current_period_start=now,
                                current_period_end=now))
    db.session.add(Subscription(user_id=u.id, meal_plan_id=p.id, order_id=orders[1].id,
                                gateway="test", status="active", current_period_start=now,
                                current_period_end=now))
    db.session.flush()  # one canceled + one live is fine
    db.session.add(Subscription(user_id=u.id, meal_plan_id=p.id, order_id=orders[2].id,
                                gateway="test", status="past_due", current_period_start=now,
                                current_period_end=now))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.flush()
    db.session.rollback()
