"""Webhook ingest under gunicorn on PostgreSQL, beside a baseline in the same run.

Tiffin: fresh payment.succeeded events for real pending orders (each one verified,
stored, and fully processed: order paid, subscription, credits, email queued), then
the same events again three times over as duplicates (verified, found, answered).
Baseline (bench/baseline_app.py, same gunicorn settings, same database): the same
bodies, fresh then duplicate; it only checks the HMAC and inserts one row.

Both servers run side by side and the passes are interleaved in ROUNDS rounds of
EVENTS fresh events each (the order alternates per round), so a shared host's drift
falls on both alike; each round gives a ratio and the median round is reported.

    python bench/webhook_bench.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_e2e_bench \
        --reset --events 1000 --rounds 3 --clients 20 --workers 4

Prints `SUMMARY {json}` with deliveries/second, p50/p99 (ms) and our figure as a
fraction of the baseline (targets: fresh >= 0.4, duplicate >= 0.6). Exits 0 when
the run completed and every delivery was answered 200 and processed, else 1.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import uuid
from statistics import median
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from bench.baseline_app import create_table
from bench.load import Request, run_load, summarise
from bench.payments import prepare_payments
from bench.server import Gunicorn, app_env, prepare_database

TARGETS = {"fresh": 0.4, "duplicate": 0.6}
WARMUP_EVENTS = 40
DUPLICATE_ROUNDS = 3


def _requests(payments, label: str) -> list[Request]:
    return [Request(label, "POST", p.webhook_path, p.webhook_body, p.webhook_headers)
            for p in payments]


def _pass(server_url: str, payments, kind: str, clients: int) -> dict:
    """One pass: the bodies once (fresh), or DUPLICATE_ROUNDS times over (duplicates are
    quick; a longer pass measures them steadily)."""
    repeat = DUPLICATE_ROUNDS if kind == "duplicate" else 1
    return summarise(*run_load(server_url, _requests(payments, kind) * repeat, clients))


def _interleaved(servers: dict, warmup, rounds: list, clients: int) -> dict:
    """Both servers up at once; each round sends its own fresh bodies to one, then the
    other (the order alternates, so drift on a shared host falls on both alike), then
    the same bodies again as duplicates. Returns the passes per server and kind."""
    passes = {name: {"fresh": [], "duplicate": []} for name in servers}
    for url in servers.values():
        run_load(url, _requests(warmup, "warmup"), clients)
    names = list(servers)
    for number, payments in enumerate(rounds):
        order = names if number % 2 == 0 else names[::-1]
        for kind in ("fresh", "duplicate"):
            for name in order:
                passes[name][kind].append(_pass(servers[name], payments, kind, clients))
    return passes


def _combined(passes: list[dict]) -> dict:
    """One figure per server and kind: the median round's rate and latencies, all statuses."""
    statuses: dict[str, int] = {}
    for one in passes:
        for code, n in one["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    return {"rps": round(median([p["rps"] for p in passes]), 1),
            "p50_ms": round(median([p["p50_ms"] for p in passes]), 2),
            "p99_ms": round(median([p["p99_ms"] for p in passes]), 2),
            "rounds_rps": [p["rps"] for p in passes],
            "requests": sum(p["requests"] for p in passes), "statuses": statuses}


def _processed(app, payments) -> int:
    from app.extensions import db

    with app.app_context():
        keys = [p.event_id for p in payments]
        return db.session.execute(sa.text(
            "SELECT count(*) FROM webhook_events e JOIN orders o ON o.gateway = e.gateway "
            "AND o.gateway_order_id = e.payload->'data'->>'order_id' "
            "WHERE e.event_id IN :keys AND e.status = 'processed' AND o.status = 'paid'"
        ).bindparams(sa.bindparam("keys", expanding=True)), {"keys": keys}).scalar_one()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_e2e_bench"))
    parser.add_argument("--events", type=int, default=1000, help="fresh events per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--reset", action="store_true", help="drop and rebuild the schema first")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if not args.database_url.startswith("postgresql"):
        parser.error("the webhook benchmark runs on PostgreSQL")

    from app import create_app

    secret, webhook_secret = "bench-secret-key-" + "x" * 24, "whsec_bench_test_gateway"
    env = app_env(args.database_url, secret_key=secret, webhook_secret=webhook_secret)
    prepare_database(env, reset=args.reset)
    create_table(args.database_url)
    app = create_app({"TIFFIN_ENV": "development", "SQLALCHEMY_DATABASE_URI": args.database_url,
                      "SECRET_KEY": secret, "TEST_GATEWAY_ENABLED": True,
                      "TEST_GATEWAY_WEBHOOK_SECRET": webhook_secret, "RATELIMIT_ENABLED": False})
    with app.app_context():
        batch = prepare_payments(app, WARMUP_EVENTS + args.rounds * args.events, gateways=["test"],
                                 plans=["lunch-monthly"], prefix=f"wh-{uuid.uuid4().hex[:8]}",
                                 rng=random.Random(args.seed))
    warmup, payments = batch[:WARMUP_EVENTS], batch[WARMUP_EVENTS:]
    rounds = [payments[i * args.events:(i + 1) * args.events] for i in range(args.rounds)]

    with Gunicorn(env, workers=args.workers) as ours, \
            Gunicorn(env, app_spec="bench.baseline_app:app", workers=args.workers) as baseline:
        passes = _interleaved({"tiffin": ours.url, "baseline": baseline.url}, warmup, rounds,
                              args.clients)
    processed = _processed(app, payments)
    ours = {kind: _combined(passes["tiffin"][kind]) for kind in TARGETS}
    baseline = {kind: _combined(passes["baseline"][kind]) for kind in TARGETS}
    # Each round's ratio compares passes run moments apart; the median round is reported.
    round_ratios = {kind: [round(a["rps"] / b["rps"], 3) for a, b in
                           zip(passes["tiffin"][kind], passes["baseline"][kind])]
                    for kind in TARGETS}
    ratios = {kind: round(median(values), 3) for kind, values in round_ratios.items()}
    sent = {"fresh": args.rounds * args.events,
            "duplicate": args.rounds * args.events * DUPLICATE_ROUNDS}
    all_ok = all(m[k]["statuses"] == {"200": sent[k]}
                 for m in (ours, baseline) for k in TARGETS) and processed == len(payments)
    summary = {
        "bench": "webhook", "events": args.events, "rounds": args.rounds, "clients": args.clients,
        "workers": args.workers, "fully_processed": processed, "ok": all_ok,
        "tiffin": ours, "baseline": baseline, "ratio": ratios, "round_ratios": round_ratios,
        "targets": TARGETS,
        "meets_targets": all(ratios[k] >= t for k, t in TARGETS.items()),
    }
    for kind in TARGETS:
        print(f"{kind:9} tiffin {ours[kind]['rps']:8.1f}/s p50 {ours[kind]['p50_ms']:7.2f} ms "
              f"p99 {ours[kind]['p99_ms']:7.2f} ms | baseline {baseline[kind]['rps']:8.1f}/s "
              f"p50 {baseline[kind]['p50_ms']:6.2f} ms p99 {baseline[kind]['p99_ms']:6.2f} ms | "
              f"ratio {ratios[kind]:.3f} (rounds {round_ratios[kind]}; target {TARGETS[kind]})",
              file=sys.stderr)
    print("SUMMARY " + json.dumps(summary, sort_keys=True))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
