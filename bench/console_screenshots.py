"""Screenshots of the operator console for the README (docs/ops-*.png).

    .venv/bin/python bench/console_screenshots.py

Serves the shop under gunicorn on a scratch SQLite database, buys a few plans and packs,
plants two incidents (a paid order whose subscription was lost, a failed webhook),
records a monitor run, then signs in as the demo operator in headless Chromium and
captures the dashboard and an order's page (timeline included).
"""
from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server import PYTHON, Gunicorn, app_env, prepare_database  # noqa: E402

DOCS = ROOT / "docs"


def populate(url: str) -> str:
    """Orders, incidents and a monitor run; returns the reference of the order to show."""
    import sqlalchemy as sa

    from app import create_app
    from app.extensions import db
    from app.models import MealPlan, Order, User, WebhookEvent, utcnow
    from app.services import monitoring, refunds  # noqa: F401 - the services the console uses
    from app.services.fulfilment import _create_subscription_and_order

    app = create_app({"TIFFIN_ENV": "development", "SQLALCHEMY_DATABASE_URI": url,
                      "SECRET_KEY": "screens-" + "x" * 30})
    with app.app_context():
        plans = {p.slug: p for p in db.session.scalars(sa.select(MealPlan))}
        shown = None
        for i, (name, slug) in enumerate([("Asha Rao", "lunch-monthly"),
                                          ("Ben Mathew", "family-monthly"),
                                          ("Chitra Iyer", "trial-week"),
                                          ("Dev Patel", "lunch-monthly")]):
            person = User(email=f"{name.split()[0].lower()}@example.com", name=name)
            person.set_password(secrets.token_hex(8))
            db.session.add(person)
            db.session.commit()
            for item in (slug, "meal-pack-5"):
                plan = plans[item]
                order = Order(user_id=person.id, meal_plan_id=plan.id, gateway="test",
                              gateway_order_id="tgo_" + secrets.token_hex(8),
                              amount_minor=plan.price_minor, currency=plan.currency,
                              kind="subscription" if plan.is_recurring else "addon")
                db.session.add(order)
                db.session.commit()
                _create_subscription_and_order(
                    person, plan, "test", order.gateway_order_id, "tgp_" + secrets.token_hex(8),
                    plan.price_minor, plan.currency, actor="webhook:test",
                    metadata_user_id=person.id)
                when = utcnow() - timedelta(hours=2 + 5 * i)
                db.session.execute(sa.update(Order).where(Order.id == order.id)
                                   .values(paid_at=when, created_at=when))
                db.session.commit()
                if shown is None:
                    shown = order.reference
                    db.session.add(WebhookEvent(
                        gateway="test", event_id="tge_" + secrets.token_hex(12),
                        event_type="payment.succeeded", status="processed", attempts=1,
                        payload={"data": {"order_id": order.gateway_order_id,
                                          "reference": order.reference}},
                        received_at=when + timedelta(seconds=2),
                        processed_at=when + timedelta(seconds=2)))
                    db.session.commit()
        lost = db.session.scalars(sa.select(Order).where(Order.user_id == 4,
                                                         Order.kind == "subscription")).first()
        db.session.execute(sa.text("UPDATE credit_ledger SET subscription_id = NULL "
                                   "WHERE order_id = :o"), {"o": lost.id})
        db.session.execute(sa.text("DELETE FROM subscriptions WHERE order_id = :o"), {"o": lost.id})
        db.session.execute(sa.update(User).where(User.id == 4).values(subscription_status="none"))
        db.session.add(WebhookEvent(gateway="test", event_id="tge_" + secrets.token_hex(12),
                                    event_type="payment.succeeded", payload={"data": {}},
                                    status="failed", attempts=2,
                                    last_error="KeyError: 'order_id'",
                                    received_at=utcnow() - timedelta(minutes=40)))
        db.session.commit()
        monitoring.record_run(monitoring.run_checks())
    return shown


def main() -> int:
    from playwright.sync_api import sync_playwright

    workdir = tempfile.mkdtemp(prefix="tiffin-screens-")
    env = app_env(f"sqlite:///{workdir}/shop.db", secret_key="screens-" + "x" * 30,
                  webhook_secret="whsec_screens")
    prepare_database(env)
    seeded = subprocess.run([PYTHON, "-m", "flask", "seed", "--demo"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True).stdout
    password = seeded.rsplit("password ", 1)[1].split()[0]
    reference = populate(env["DATABASE_URL"])
    DOCS.mkdir(exist_ok=True)
    with Gunicorn(env, workers=1) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(base_url=server.url, viewport={"width": 1100, "height": 800})
        page.goto("/login")
        page.get_by_label("Email").fill("operator@tiffin.example")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.goto("/ops/")
        page.screenshot(path=str(DOCS / "ops-dashboard.png"), full_page=True)
        page.goto(f"/ops/orders/{reference}")
        page.screenshot(path=str(DOCS / "ops-order-timeline.png"), full_page=True)
        browser.close()
    print(f"wrote {DOCS / 'ops-dashboard.png'} and {DOCS / 'ops-order-timeline.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
