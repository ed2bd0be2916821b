"""Where the time of one webhook delivery goes: in-process, one at a time, on
PostgreSQL. Every SQL statement is timed and attributed to the innermost
function under app/ that issued it; the rest is Python time.

    python bench/webhook_profile.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_e2e_bench --events 100

Prints a table per pass (fresh, duplicate) and one `SUMMARY {json}` line.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event

from bench.payments import prepare_payments
from bench.server import ROOT, app_env, prepare_database

APP_DIR = str(ROOT / "app")
# The driver-level runner every hot-path statement goes through: its caller is the one to name.
RUNNER = str(ROOT / "app" / "services" / "sql.py")


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(APP_DIR) and filename != RUNNER:
            return f"{filename[len(str(ROOT)) + 1:]}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "(outside app)"


def _shape(statement: str) -> str:
    words = statement.split()
    verb = words[0].upper() if words else "?"
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", statement, re.I)
    return f"{verb} {table.group(1) if table else ''}".strip()


def profile_pass(app, client, payments) -> dict:
    from app.extensions import db

    stats: dict = defaultdict(lambda: [0, 0.0])
    started_at: dict = {}

    def before(conn, cursor, statement, params, context, executemany):
        started_at[id(cursor)] = time.perf_counter()

    def after(conn, cursor, statement, params, context, executemany):
        seconds = time.perf_counter() - started_at.pop(id(cursor), time.perf_counter())
        key = (_caller(), _shape(statement))
        stats[key][0] += 1
        stats[key][1] += seconds

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    commits = [0]
    event.listen(engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    wall = time.perf_counter()
    for p in payments:
        r = client.post(p.webhook_path, data=p.webhook_body, headers=p.webhook_headers,
                        environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert r.status_code == 200, r.text
    wall = time.perf_counter() - wall
    event.remove(engine, "before_cursor_execute", before)
    event.remove(engine, "after_cursor_execute", after)
    n = len(payments)
    sql_ms = sum(s for _, s in stats.values()) * 1000 / n
    rows = sorted(((k, c / n, s * 1000 / n) for k, (c, s) in stats.items()), key=lambda r: -r[2])
    return {"ms_per_event": round(wall * 1000 / n, 2), "sql_ms_per_event": round(sql_ms, 2),
            "python_ms_per_event": round(wall * 1000 / n - sql_ms, 2),
            "statements_per_event": round(sum(c for c, _ in stats.values()) / n, 1),
            "commits_per_event": round(commits[0] / n, 1),
            "by_caller": [{"caller": k[0], "sql": k[1], "per_event": round(c, 2),
                           "ms_per_event": round(ms, 3)} for k, c, ms in rows]}


# The steps of one delivery, as (label, file suffix, function name) for cProfile.
STEPS = [
    ("whole request (Flask)", "flask/app.py", "wsgi_app"),
    ("route: receive", "app/webhooks/routes.py", "receive"),
    ("verify HMAC + parse", "app/gateways/test.py", "parse_webhook"),
    ("store_event (insert + commit)", "app/services/webhook_inbox.py", "store_event"),
    ("process_event (handler + attempt row)", "app/services/webhook_inbox.py", "process_event"),
    ("handler: payment_succeeded", "app/webhooks/handlers/test.py", "payment_succeeded"),
    ("fulfilment: _fulfil_once", "app/services/fulfilment.py", "_fulfil_once"),
    ("notifications.enqueue (renders the email)", "app/services/notifications.py", "enqueue"),
    ("jinja render_template", "flask/templating.py", "render_template"),
    ("credits._apply", "app/services/credits.py", "_apply"),
    ("audit.record", "app/services/audit.py", "record"),
    ("DB commit (psycopg)", "psycopg/connection.py", "commit"),
    ("ORM flush", "sqlalchemy/orm/session.py", "flush"),
    ("session teardown (remove)", "sqlalchemy/orm/scoping.py", "remove"),
    ("pool checkout (+ ping when idle)", "sqlalchemy/pool/base.py", "_checkout"),
]


def cprofile_pass(client, payments) -> list[dict]:
    """Cumulative time of each step per event (cProfile inflates Python time a little)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for p in payments:
        client.post(p.webhook_path, data=p.webhook_body, headers=p.webhook_headers,
                    environ_base={"REMOTE_ADDR": "127.0.0.1"})
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    out = []
    for label, suffix, name in STEPS:
        cum = sum(v[3] for (file, _, fn), v in stats.items()
                  if fn == name and file.endswith(suffix))
        out.append({"step": label, "ms_per_event": round(cum * 1000 / len(payments), 2)})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_e2e_bench"))
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args(argv)

    from app import create_app

    secret, webhook_secret = "bench-secret-key-" + "x" * 24, "whsec_bench_test_gateway"
    prepare_database(app_env(args.database_url, secret_key=secret, webhook_secret=webhook_secret))
    app = create_app({"TIFFIN_ENV": "development", "SQLALCHEMY_DATABASE_URI": args.database_url,
                      "SECRET_KEY": secret, "TEST_GATEWAY_ENABLED": True,
                      "TEST_GATEWAY_WEBHOOK_SECRET": webhook_secret, "RATELIMIT_ENABLED": False})
    with app.app_context():
        batch = prepare_payments(app, 2 * args.events + 10, gateways=["test"], plans=["lunch-monthly"],
                                 prefix=f"prof-{uuid.uuid4().hex[:8]}", rng=random.Random(0))
    client = app.test_client()
    profile_pass(app, client, batch[:10])  # warm caches and the pool
    timed, profiled = batch[10:10 + args.events], batch[10 + args.events:]
    passes = {"fresh": profile_pass(app, client, timed),
              "duplicate": profile_pass(app, client, timed)}
    steps = {"fresh": cprofile_pass(client, profiled), "duplicate": cprofile_pass(client, profiled)}
    for name, result in passes.items():
        print(f"\n== {name}: {result['ms_per_event']} ms/event = SQL {result['sql_ms_per_event']} ms "
              f"({result['statements_per_event']} statements, {result['commits_per_event']} commits)"
              f" + Python {result['python_ms_per_event']} ms", file=sys.stderr)
        for row in result["by_caller"][:25]:
            print(f"  {row['ms_per_event']:7.3f} ms  {row['per_event']:4.1f}x  {row['sql']:32} "
                  f"{row['caller']}", file=sys.stderr)
    for name, rows in steps.items():
        print(f"\n== {name}, cumulative per step under cProfile (ms/event):", file=sys.stderr)
        for row in rows:
            if row["ms_per_event"]:
                print(f"  {row['ms_per_event']:7.2f}  {row['step']}", file=sys.stderr)
    print("SUMMARY " + json.dumps({"bench": "webhook_profile", "events": args.events,
                                   **{k: {kk: vv for kk, vv in v.items() if kk != "by_caller"}
                                      for k, v in passes.items()}}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
