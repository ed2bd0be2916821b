"""The utils/ scripts wrap the Flask commands: same flags, same exit codes; the health summary."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import database_url
from tests.ops.conftest import remove_subscription

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["payment_subscription_monitor.py", "fix_failed_subscriptions.py",
           "sync_subscription_status.py", "fix_payment_user_mismatch.py", "reconcile_gateways.py",
           "simple_payment_test.py"]


def _script(name, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "RAZORPAY_"))}
    env.update(TIFFIN_ENV="testing", DATABASE_URL=database_url(), TEST_GATEWAY_ENABLED="1",
               TEST_GATEWAY_WEBHOOK_SECRET="whsec_test_gateway", SECRET_KEY="test-secret-key")
    return subprocess.run([sys.executable, str(ROOT / "utils" / name), *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_is_short_and_has_help(name):
    assert len((ROOT / "utils" / name).read_text().splitlines()) <= 20
    result = _script(name, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout and "--json" in result.stdout


def test_script_and_flask_command_agree(shop, runner):
    from app.extensions import db

    remove_subscription(shop["asha"])
    db.session.remove()
    script = _script("payment_subscription_monitor.py", "--check", "--json")
    flask = runner.invoke(args=["monitor", "check", "--check", "--json"])
    assert script.returncode == flask.exit_code == 2
    assert json.loads(script.stdout)["counts"] == json.loads(flask.stdout)["counts"]
    fixed = _script("fix_failed_subscriptions.py", "--fix")
    assert fixed.returncode == 0, fixed.stderr
    assert _script("fix_failed_subscriptions.py", "--check").returncode == 0


def test_health_summary(shop, runner):
    runner.invoke(args=["monitor", "check"])
    data = json.loads(runner.invoke(args=["monitor", "health", "--json"]).stdout)
    assert data["orders"] == {"paid": 3} and data["subscriptions"] == {"active": 2}
    assert data["gateways"][0]["name"] == "test" and data["gateways"][0]["last_webhook_at"]
    assert data["last_monitor_run"]["exit_code"] == 0
    screen = _script("simple_payment_test.py")
    assert screen.returncode == 0 and "Orders: paid 3" in screen.stdout
    assert "Last monitor run:" in screen.stdout
