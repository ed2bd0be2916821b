"""Monitor benchmark: a million orders on PostgreSQL, a few hundred planted problems of each kind.

    .venv/bin/python bench/monitor_bench.py [--orders 1000000] [--plant 300] [--database-url URL]

Builds a fresh schema with the real migrations in the bench database (default
`tiffin_ops_bench`, created if missing), fills it with set-based
INSERT ... SELECT generate_series (no ORM loops), plants `--plant` problems of
every kind the monitor looks for, then runs the monitor (warm, best of
--repeat) and, beside it, the raw SQL of its queries through a bare psycopg
cursor. It checks that the monitor found exactly the planted problems (by id)
and prints one line `SUMMARY {json}` on stdout for scripts (the rest goes to stderr).
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_ops_bench"
GATEWAYS = ("test", "stripe", "razorpay")


def say(line: str) -> None:
    """Human-readable progress goes to stderr; stdout carries only the SUMMARY line."""
    print(line, file=sys.stderr, flush=True)


def ensure_database(url: str) -> None:
    parsed = sa.engine.make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                            {"d": parsed.database}).scalar():
            conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def build_app(url: str):
    from app import create_app

    return create_app({
        "TIFFIN_ENV": "testing", "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench",
        "TEST_GATEWAY_ENABLED": True, "TEST_GATEWAY_WEBHOOK_SECRET": "whsec_bench",
        # Stripe and Razorpay "configured" so the quiet-gateway check covers three gateways;
        # the monitor never calls their APIs.
        "STRIPE_SECRET_KEY": "sk_test_bench", "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
        "STRIPE_WEBHOOK_SECRET": "whsec_bench", "RAZORPAY_KEY_ID": "rzp_test_bench",
        "RAZORPAY_KEY_SECRET": "bench", "RAZORPAY_WEBHOOK_SECRET": "bench",
        "MONITOR_MAX_FINDINGS_PER_CHECK": 1000,
    })


def fresh_schema(app) -> None:
    from flask_migrate import upgrade

    from app.extensions import db
    from app.services.catalogue import seed_catalogue

    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    upgrade()
    seed_catalogue()


FILL = [
    # Users 1..U: each has one subscription order, one renewal, and every other user an add-on.
    """INSERT INTO users (id, email, name, password_hash, subscription_status, plan_meal_credits,
                          addon_meal_credits, created_at)
       SELECT u, 'user' || u || '@bench.example', 'User ' || u, 'x',
              CASE WHEN u % 10 = 0 THEN 'canceled' ELSE 'active' END, :meals,
              CASE WHEN u <= :addons THEN :pack ELSE 0 END, now() - interval '400 days'
       FROM generate_series(1, :users) AS u""",
    # Orders: ids 1..U first orders, U+1..2U renewals, 2U+1..N add-on packs; spread over a year.
    """INSERT INTO orders (id, reference, user_id, meal_plan_id, parent_order_id, kind, status,
                           gateway, gateway_order_id, gateway_payment_id, gateway_metadata_user_id,
                           amount_minor, currency, refunded_minor, created_at, updated_at, paid_at)
       SELECT o, 'BENCH-' || o, x.user_id,
              CASE WHEN o > 2 * :users THEN :pack_plan ELSE :plan END,
              CASE WHEN o > :users AND o <= 2 * :users THEN o - :users END,
              CASE WHEN o <= :users THEN 'subscription' WHEN o <= 2 * :users THEN 'renewal'
                   ELSE 'addon' END,
              'paid', (ARRAY['test', 'stripe', 'razorpay'])[1 + o % 3], 'bench_o' || o,
              'bench_p' || o, x.user_id, 299900, 'INR', 0, x.at, x.at, x.at
       FROM generate_series(1, :orders) AS o,
            LATERAL (SELECT CASE WHEN o <= :users THEN o WHEN o <= 2 * :users THEN o - :users
                                 ELSE o - 2 * :users END AS user_id,
                            now() - interval '20 minutes' - (o * interval '31 seconds') AS at) x""",
    """INSERT INTO subscriptions (id, user_id, meal_plan_id, order_id, gateway,
                                  gateway_subscription_id, status,
                                  current_period_start, current_period_end, cancel_at_period_end,
                                  created_at, updated_at)
       SELECT u, u, :plan, u, (ARRAY['test', 'stripe', 'razorpay'])[1 + u % 3],
              CASE WHEN u % 3 <> 0 THEN 'sub_' || u END,
              CASE WHEN u % 10 = 0 THEN 'canceled' ELSE 'active' END,
              now() - interval '10 days', now() + interval '20 days', false, now(), now()
       FROM generate_series(1, :users) AS u""",
    """INSERT INTO credit_ledger (user_id, order_id, bucket, delta, balance_after, reason,
                                  source_key, created_at)
       SELECT u, u, 'plan', :meals, :meals, 'subscription_start', 'order:' || u, now()
       FROM generate_series(1, :users) AS u""",
    """INSERT INTO credit_ledger (user_id, order_id, bucket, delta, balance_after, reason,
                                  source_key, created_at)
       SELECT u, 2 * :users + u, 'addon', :pack, :pack, 'addon_pack',
              'order:' || (2 * :users + u), now()
       FROM generate_series(1, :addons) AS u""",
    # Webhooks: every gateway delivered, the newest a minute ago.
    """INSERT INTO webhook_events (gateway, event_id, event_type, payload, status, attempts,
                                   received_at, processed_at)
       SELECT (ARRAY['test', 'stripe', 'razorpay'])[1 + e % 3], 'evt_bench_' || e,
              'payment.succeeded', '{}'::jsonb, 'processed', 1,
              now() - interval '1 minute' - (e * interval '30 seconds'),
              now() - interval '1 minute' - (e * interval '30 seconds')
       FROM generate_series(1, :events) AS e""",
    """INSERT INTO notification_outbox (user_id, kind, to_email, subject, body_text, dedupe_key,
                                        status, attempts, created_at, sent_at)
       SELECT 1 + e % :users, 'payment_confirmed', 'user@bench.example', 'Paid', 'Thanks',
              'bench:' || e, 'sent', 1, now() - (e * interval '60 seconds'), now()
       FROM generate_series(1, :events) AS e""",
    "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))",
    "SELECT setval(pg_get_serial_sequence('orders', 'id'), (SELECT max(id) FROM orders))",
    "SELECT setval(pg_get_serial_sequence('subscriptions', 'id'), (SELECT max(id) FROM subscriptions))",
]


def plant(conn, k: int, users: int) -> dict[str, set]:
    """Plant k problems of each kind on disjoint users; returns the expected finding ids per check."""
    def ids(sql, **params):
        return {row[0] for row in conn.execute(sa.text(sql), {"k": k, "users": users, **params})}

    expected = {}
    # Paid, no subscription (the lost row) — the user's status says none, as fulfilment left it.
    expected["paid_without_subscription"] = ids(
        """WITH gone AS (DELETE FROM subscriptions WHERE user_id BETWEEN 1001 AND 1000 + :k
                         RETURNING user_id)
           UPDATE users SET subscription_status = 'none' WHERE id IN (SELECT user_id FROM gone)
           RETURNING id""")  # first order id == user id
    expected["orphan_subscription"] = ids(
        """UPDATE orders SET status = 'failed' WHERE id BETWEEN 2001 AND 2000 + :k
           RETURNING (SELECT s.id FROM subscriptions s WHERE s.order_id = orders.id)""")
    conn.execute(sa.text("DROP INDEX uq_subscriptions_one_live_per_user"))
    expected["multiple_live_subscriptions"] = ids(
        """INSERT INTO subscriptions (user_id, meal_plan_id, order_id, gateway,
                                      gateway_subscription_id, status,
                                      current_period_start, current_period_end, created_at,
                                      updated_at)
           SELECT user_id, meal_plan_id, :users + user_id, gateway,
                  gateway_subscription_id || '_second', 'active',
                  current_period_start, current_period_end, now(), now()
           FROM subscriptions WHERE user_id BETWEEN 3001 AND 3000 + :k AND status = 'active'
           RETURNING user_id""")  # a second live one, on the user's renewal order
    # A live Stripe/Razorpay subscription an old repair left without the gateway's id.
    expected["subscription_without_gateway_id"] = ids(
        """UPDATE subscriptions SET gateway_subscription_id = NULL
           WHERE user_id BETWEEN 9001 AND 9000 + (:k * 3) AND gateway <> 'test'
             AND status = 'active' RETURNING id""")
    expected["user_status_drift"] = ids(
        """UPDATE users SET subscription_status = 'past_due'
           WHERE id BETWEEN 4001 AND 4000 + :k / 2 RETURNING id""") | ids(
        """UPDATE users SET plan_meal_credits = 7
           WHERE id BETWEEN 4001 + :k / 2 AND 4000 + :k RETURNING id""")
    expected["payment_user_mismatch"] = ids(
        """UPDATE orders SET gateway_metadata_user_id = user_id + 1
           WHERE id BETWEEN 5001 AND 5000 + :k RETURNING id""")
    expected["order_needs_review"] = ids(
        """INSERT INTO orders (reference, user_id, meal_plan_id, kind, status, gateway,
                               gateway_order_id, amount_minor, currency, failure_code, created_at,
                               updated_at)
           SELECT 'BENCH-NR-' || u, u, meal_plan_id, 'subscription', 'needs_review', 'test',
                  'bench_nr' || u, 299900, 'INR', 'PAYMENT_AMOUNT_MISMATCH',
                  now() - interval '2 hours', now()
           FROM (SELECT id AS u, (SELECT meal_plan_id FROM orders WHERE id = 1) AS meal_plan_id
                 FROM users WHERE id BETWEEN 6001 AND 6000 + :k) x RETURNING id""")
    expected["authorized_not_captured"] = ids(
        """INSERT INTO orders (reference, user_id, meal_plan_id, kind, status, gateway,
                               gateway_order_id, amount_minor, currency, authorized_at, created_at,
                               updated_at)
           SELECT 'BENCH-AU-' || id, id, (SELECT meal_plan_id FROM orders WHERE id = 1),
                  'subscription', 'pending', 'test', 'bench_au' || id, 299900, 'INR',
                  now() - interval '60 hours', now() - interval '60 hours', now()
           FROM users WHERE id BETWEEN 7001 AND 7000 + :k RETURNING id""")
    expected["order_pending_too_long"] = ids(
        """INSERT INTO orders (reference, user_id, meal_plan_id, kind, status, gateway,
                               gateway_order_id, amount_minor, currency, created_at, updated_at)
           SELECT 'BENCH-PE-' || id, id, (SELECT meal_plan_id FROM orders WHERE id = 1),
                  'subscription', 'pending', 'test', 'bench_pe' || id, 299900, 'INR',
                  now() - interval '2 days', now()
           FROM users WHERE id BETWEEN 8001 AND 8000 + :k RETURNING id""")
    third = k // 3
    expected["webhook_events"] = ids(
        """UPDATE webhook_events SET status = 'dead', attempts = 8
           WHERE id BETWEEN 1001 AND 1000 + :n RETURNING id""", n=third) | ids(
        """UPDATE webhook_events SET status = 'failed', attempts = 2
           WHERE id BETWEEN 2001 AND 2000 + :n RETURNING id""", n=third) | ids(
        """UPDATE webhook_events SET status = 'received', processed_at = NULL
           WHERE id BETWEEN 3001 AND 3000 + :n RETURNING id""", n=k - 2 * third)
    expected["notification_outbox"] = ids(
        """UPDATE notification_outbox SET status = 'failed', attempts = 5
           WHERE id BETWEEN 1001 AND 1000 + :k RETURNING id""")
    # Stripe went quiet 10 hours ago while orders kept coming (one finding per gateway).
    conn.execute(sa.text("""UPDATE webhook_events SET received_at = now() - interval '10 hours'
                            - (id * interval '30 seconds')
                            WHERE gateway = 'stripe'"""))
    expected["gateway_webhooks_quiet"] = {"stripe"}
    return expected


def raw_sql_ms(app, dsn: str) -> float:
    """The monitor's queries, as compiled SQL, run through a bare psycopg cursor."""
    from app.extensions import db
    from app.services import monitoring

    statements = []
    with app.app_context():
        dialect = db.engine.dialect
        for check in monitoring.CHECKS:
            query, params = monitoring.check_query(check)
            if query is None:
                continue
            compiled = query.compile(dialect=dialect)
            bind = compiled.construct_params(params)
            for name, value in bind.items():
                processor = compiled._bind_processors.get(name)
                if processor:
                    bind[name] = processor(value)
            statements.append((str(compiled), bind))
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        for sql, bind in statements:
            cur.execute(sql, bind)
            cur.fetchall()
        elapsed = (time.perf_counter() - start) * 1000
        conn.rollback()
    return elapsed


def run_monitor(app, *, trace_memory: bool = False):
    """One monitor run: (report, milliseconds, peak Python memory in bytes or 0).

    Memory is traced in a separate run: tracemalloc slows allocation-heavy code."""
    from app.services import monitoring

    with app.app_context():
        if trace_memory:
            tracemalloc.start()
        start = time.perf_counter()
        report = monitoring.run_checks()
        elapsed = (time.perf_counter() - start) * 1000
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
        if trace_memory:
            tracemalloc.stop()
    return report, elapsed, peak


def build_data(app, orders: int, plant_per_kind: int) -> tuple[dict[str, set], dict[str, int]]:
    """A fresh schema, the set-based fill, the planted problems, VACUUM ANALYZE.

    Returns the expected finding ids per check and the row counts (shared with
    bench/console_bench.py)."""
    from app.extensions import db
    from app.models import MealPlan

    users = orders * 2 // 5          # 40% first orders, 40% renewals, 20% add-on packs
    with app.app_context():
        fresh_schema(app)
        lunch = db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == "lunch-monthly")).one()
        pack = db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == "meal-pack-5")).one()
        params = {"users": users, "addons": orders - 2 * users, "orders": orders, "plan": lunch.id,
                  "pack_plan": pack.id, "meals": lunch.meals_per_period,
                  "pack": pack.meals_per_period, "events": max(orders // 10, 10_000)}
        db.session.remove()  # end the read transaction before the DDL below
        with db.engine.begin() as conn:
            # Bulk-load the way one restores a dump: no per-row foreign-key triggers, plain
            # indexes dropped during the load and built once afterwards (constraints stay).
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
            conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
            indexes = conn.execute(sa.text(
                """SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
                   AND tablename IN ('users', 'orders', 'subscriptions', 'credit_ledger',
                                     'webhook_events', 'notification_outbox')
                   AND indexname NOT IN (SELECT conname FROM pg_constraint)""")).all()
            for name, _ in indexes:
                conn.execute(sa.text(f'DROP INDEX "{name}"'))
            for statement in FILL:
                conn.execute(sa.text(statement), params)
            for _, definition in indexes:
                conn.execute(sa.text(definition))
        with db.engine.begin() as conn:
            expected = plant(conn, plant_per_kind, users)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
        counts = {t: db.session.scalar(sa.text(f"SELECT count(*) FROM {t}"))
                  for t in ("users", "orders", "subscriptions", "credit_ledger", "webhook_events")}
        db.session.remove()
    return expected, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--plant", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    ensure_database(args.database_url)
    app = build_app(args.database_url)

    t0 = time.perf_counter()
    expected, counts = build_data(app, args.orders, args.plant)
    fill_s = time.perf_counter() - t0
    say(f"filled in {fill_s:.1f}s: " + ", ".join(f"{k}={v}" for k, v in counts.items()))

    dsn = sa.engine.make_url(args.database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    run_monitor(app)  # warm the caches once
    raw_sql_ms(app, dsn)
    runs = [run_monitor(app) for _ in range(args.repeat)]
    raws = [raw_sql_ms(app, dsn) for _ in range(args.repeat)]
    report, monitor_ms, _ = min(runs, key=lambda r: r[1])
    peak = run_monitor(app, trace_memory=True)[2]
    raw_ms = min(raws)

    found = {}
    for f in report.findings:
        found.setdefault(f.check, set()).add(f.details.get("id") if f.check != "gateway_webhooks_quiet"
                                             else f.details["id"])
    problems = []
    for check, ids in expected.items():
        if found.get(check, set()) != ids:
            problems.append(f"{check}: expected {len(ids)}, found {len(found.get(check, set()))}, "
                            f"missing {sorted(ids - found.get(check, set()))[:5]}, "
                            f"extra {sorted(found.get(check, set()) - ids)[:5]}")
    problems += [f"{c}: unexpected {len(v)} finding(s)" for c, v in found.items() if c not in expected]
    for check in report.timings_ms:
        say(f"  {check:30} {report.timings_ms[check]:9.1f} ms  {report.counts[check]:5} found")
    for problem in problems:
        say("MISMATCH " + problem)
    print("SUMMARY " + json.dumps({
        "bench": "monitor", "orders": counts["orders"], "users": counts["users"],
        "planted": sum(len(v) for v in expected.values()), "findings": len(report.findings),
        "exact": not problems, "monitor_ms": round(monitor_ms), "raw_sql_ms": round(raw_ms),
        "ratio": round(monitor_ms / raw_ms, 2), "peak_mem_kb": peak // 1024,
        "fill_s": round(fill_s), "exit_code": report.exit_code,
        "check_ms": report.timings_ms}), flush=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
