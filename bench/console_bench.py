"""Operator console benchmark: the dashboard and customer search at a million orders on PostgreSQL.

    .venv/bin/python bench/console_bench.py [--orders 1000000] [--plant 300] [--samples 200]
        [--reuse] [--database-url URL]

Builds the monitor benchmark's data set (bench/monitor_bench.py: a fresh schema with the
real migrations, orders spread over a year, a few hundred planted problems of each kind)
in its own database (default `tiffin_console_bench`), records one monitor run (what the
cron leaves for the dashboard), then times, warm, `--samples` times each:

- the dashboard page (`GET /ops/` as an operator, through the Flask test client: guard,
  queries, template) and its service call alone (`console.dashboard()`);
- a customer search by email (`GET /ops/search?q=<email>`) and by order reference;
- beside each, the raw SQL of its queries: the exact statements and parameters the
  service sent (captured from the engine), replayed on a bare psycopg cursor.

Prints p50/p99 per measure on stderr and one `SUMMARY {json}` line on stdout.
`--reuse` skips the build when the database already holds the data. Not part of the suite.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench import monitor_bench  # noqa: E402
from bench.server import percentile  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_console_bench"
OPERATOR = ("bench.operator@bench.example", "bench-operator-pass")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build(app, args) -> None:
    """The monitor benchmark's data (same fill, same planted problems), plus one delivery
    attempt per webhook event for the charts."""
    from app.extensions import db

    monitor_bench.build_data(app, args.orders, args.plant)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO webhook_delivery_attempts (webhook_event_id, started_at, outcome,
                                                      duration_ms, trigger)
               SELECT id, received_at, status, 5 + id % 40, 'delivery' FROM webhook_events"""))


def prepare(app) -> None:
    """An operator to sign in as, and one recorded monitor run for the dashboard."""
    from app.extensions import db
    from app.models import User
    from app.services import monitoring

    with app.app_context():
        user = db.session.scalars(sa.select(User).where(User.email == OPERATOR[0])).first()
        if user is None:
            user = User(email=OPERATOR[0], name="Bench Operator", role="operator")
            user.set_password(OPERATOR[1])
            db.session.add(user)
            db.session.commit()
        started = time.perf_counter()
        monitoring.record_run(monitoring.run_checks())
        say(f"monitor run recorded in {time.perf_counter() - started:.1f}s")


class Capture:
    """The statements (and parameters) the engine sends while active."""

    def __init__(self, engine):
        self.engine, self.statements = engine, []

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        self.statements.append((statement, parameters))

    def __enter__(self):
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, "before_cursor_execute", self._record)


def timed(fn, samples: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def stats(values: list[float]) -> dict:
    return {"p50": round(percentile(values, 50), 1), "p99": round(percentile(values, 99), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--plant", type=int, default=300)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="keep the data already built")
    parser.add_argument("--database-url",
                        default=os.environ.get("BENCH_CONSOLE_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    monitor_bench.ensure_database(args.database_url)
    app = monitor_bench.build_app(args.database_url)
    app.config.update(WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False)
    logging.getLogger("tiffin.request").setLevel(logging.WARNING)  # one line per request: noise here
    from app.extensions import db
    from app.services import console

    t0 = time.perf_counter()
    with app.app_context():
        have = sa.inspect(db.engine).has_table("orders") and db.session.scalar(
            sa.text("SELECT count(*) FROM orders")) >= args.orders
        db.session.remove()
    if not (args.reuse and have):
        build(app, args)
    fill_s = time.perf_counter() - t0
    prepare(app)
    with app.app_context():
        counts = {t: db.session.scalar(sa.text(f"SELECT count(*) FROM {t}"))
                  for t in ("users", "orders", "webhook_events", "webhook_delivery_attempts")}
        email = db.session.scalar(sa.text("SELECT email FROM users WHERE id = :i"),
                                  {"i": counts["users"] // 3})
        reference = db.session.scalar(sa.text("SELECT reference FROM orders WHERE id = :i"),
                                      {"i": counts["orders"] * 2 // 3})
        db.session.remove()
    say(f"data ready in {fill_s:.0f}s: " + ", ".join(f"{k}={v}" for k, v in counts.items()))

    client = app.test_client()
    assert client.post("/login", data={"email": OPERATOR[0], "password": OPERATOR[1]}
                       ).status_code == 302
    dsn = sa.engine.make_url(args.database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    results = {}
    measures = [
        ("dashboard", "/ops/", lambda: console.dashboard()),
        ("search_email", f"/ops/search?q={email}", lambda: console.search(email)),
        ("search_reference", f"/ops/search?q={reference}", lambda: console.search(reference)),
    ]
    with psycopg.connect(dsn, autocommit=True) as raw:
        for name, url, service in measures:
            def page(url=url):
                response = client.get(url)
                assert response.status_code == 200, response.status_code
            with app.app_context():
                with Capture(db.engine) as captured:
                    service()
                statements = list(captured.statements)
                service_ms = timed(service, args.samples)
                db.session.remove()

            def replay(statements=statements):
                with raw.cursor() as cur:
                    for sql, params in statements:
                        cur.execute(sql, params)
                        if cur.description:
                            cur.fetchall()
            raw_ms = timed(replay, args.samples)
            with raw.cursor() as cur:
                for sql, params in statements:
                    start = time.perf_counter()
                    cur.execute(sql, params)
                    if cur.description:
                        cur.fetchall()
                    say(f"    {(time.perf_counter() - start) * 1000:7.1f} ms  "
                        + " ".join(sql.split())[:110])
            page_ms = timed(page, args.samples)
            results[name] = {"page": stats(page_ms), "service": stats(service_ms),
                             "raw_sql": stats(raw_ms), "statements": len(statements),
                             "page_vs_raw_p99": round(percentile(page_ms, 99)
                                                      / percentile(raw_ms, 99), 2),
                             "service_vs_raw_p99": round(percentile(service_ms, 99)
                                                         / percentile(raw_ms, 99), 2)}
            say(f"{name:18} page p50 {results[name]['page']['p50']:7.1f} p99 "
                f"{results[name]['page']['p99']:7.1f} ms | service p99 "
                f"{results[name]['service']['p99']:7.1f} | raw SQL p99 "
                f"{results[name]['raw_sql']['p99']:7.1f} ms ({len(statements)} statements)")
    print("SUMMARY " + json.dumps({"bench": "console", **counts, "samples": args.samples,
                                   "fill_s": round(fill_s), **results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
