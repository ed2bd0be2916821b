"""Two monitor or fix runs at once never double-act (PostgreSQL, real processes and threads)."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, Subscription
from app.services import repair
from tests.conftest import count, database_url
from tests.ops.conftest import hook_posts, remove_subscription

ROOT = Path(__file__).resolve().parents[2]
RUNS = 4


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "RAZORPAY_"))}
    env.update({"TIFFIN_ENV": "testing", "DATABASE_URL": database_url(),
                "TEST_GATEWAY_ENABLED": "1", "TEST_GATEWAY_WEBHOOK_SECRET": "whsec_test_gateway",
                "SECRET_KEY": "test-secret-key", "ALERT_EMAIL": "", "ALERT_WEBHOOK_URL": "",
                **extra})
    return env


def _run_at_once(script: str, *args, env: dict) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, str(ROOT / "utils" / script), *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(RUNS)]
    return [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]


def test_parallel_monitor_runs_alert_once(pg_only, shop, alert_hook):
    remove_subscription(shop["asha"])
    db.session.remove()
    outcomes = _run_at_once("payment_subscription_monitor.py", "--check", "--alert",
                            env=_env(ALERT_WEBHOOK_URL=alert_hook.url_for("/hooks/alerts")))
    codes = [code for code, _, _ in outcomes]
    assert set(codes) <= {2, 4} and 2 in codes, outcomes
    assert len(hook_posts(alert_hook)) == 1


def test_parallel_fix_runs_create_one_subscription(pg_only, shop):
    remove_subscription(shop["asha"])
    order_id = shop["asha"].id
    db.session.remove()
    outcomes = _run_at_once("fix_failed_subscriptions.py", "--fix", env=_env())
    assert set(code for code, _, _ in outcomes) <= {0, 4}, outcomes
    assert count(Subscription, Subscription.order_id == order_id) == 1
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled",
                 AuditLogEntry.actor == "cli:fix") == 1


def test_racing_repairs_without_the_lock_still_fulfil_once(pg_only, app, shop):
    """The row locks alone (no job lock) keep concurrent repairs and a late webhook apart."""
    remove_subscription(shop["asha"])
    order_id, ledger_before = shop["asha"].id, count(CreditLedgerEntry)
    db.session.remove()
    start, errors = threading.Barrier(RUNS), []

    def worker(i):
        with app.app_context():
            try:
                start.wait()
                if i == 0:  # the webhook's path: the fulfilment helper on a paid order
                    from app.models import Order, User
                    from app.services.fulfilment import _create_subscription_and_order
                    order = db.session.get(Order, order_id)
                    _create_subscription_and_order(db.session.get(User, order.user_id),
                                                   order.meal_plan, "test", order.gateway_order_id,
                                                   order.gateway_payment_id, order.amount_minor,
                                                   order.currency, actor="webhook:test")
                else:
                    repair.fix_missing_subscription(order_id)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(RUNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(Subscription, Subscription.order_id == order_id) == 1
    assert count(CreditLedgerEntry) == ledger_before  # the grant for this order was already made
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLogEntry).where(
        AuditLogEntry.action == "order_reopened_for_repair")) == 1
