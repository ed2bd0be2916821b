"""Storefront pages under CLIENTS concurrent shoppers: p50/p99 of the catalogue
(/), a plan page (/plans/<slug>) and the account page (/account/, signed in,
with a live subscription and a few orders), through gunicorn.

    python bench/pages_bench.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_e2e_bench \
        --clients 20 --rounds 25 --workers 4

Every shopper loads the three pages ROUNDS times in a shuffled order. Prints
`SUMMARY {json}`; exits 0 when every response was a 200, else 1.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import Request, run_load, summarise
from bench.payments import prepare_payments
from bench.server import Gunicorn, app_env, prepare_database

PAGES = {"catalogue": "/", "plan": "/plans/lunch-monthly", "account": "/account/"}


def subscribed_shoppers(app, count: int, rng) -> list:
    """`count` shoppers, each with a paid plan (fulfilled through the one helper)."""
    from app.extensions import db
    from app.models import MealPlan, Order, User
    from app.services.fulfilment import _create_subscription_and_order

    with app.app_context():
        payments = prepare_payments(app, count, gateways=["test"], plans=["lunch-monthly"],
                                    prefix=f"pages-{uuid.uuid4().hex[:8]}", rng=rng)
        for p in payments:
            order = db.session.get(Order, p.order_id)
            _create_subscription_and_order(db.session.get(User, p.user_id),
                                           db.session.get(MealPlan, order.meal_plan_id), "test",
                                           order.gateway_order_id, f"tgp_pages_{order.id}",
                                           order.amount_minor, order.currency, actor="bench")
    return payments


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_e2e_bench"))
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=25, help="visits of each page per shopper")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--reset", action="store_true", help="drop and rebuild the schema first")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    from app import create_app

    rng = random.Random(args.seed)
    secret, webhook_secret = "bench-secret-key-" + "x" * 24, "whsec_bench_test_gateway"
    env = app_env(args.database_url, secret_key=secret, webhook_secret=webhook_secret)
    prepare_database(env, reset=args.reset)
    app = create_app({"TIFFIN_ENV": "development", "SQLALCHEMY_DATABASE_URI": args.database_url,
                      "SECRET_KEY": secret, "TEST_GATEWAY_ENABLED": True,
                      "TEST_GATEWAY_WEBHOOK_SECRET": webhook_secret, "RATELIMIT_ENABLED": False})
    shoppers = subscribed_shoppers(app, args.clients, rng)
    visits = []
    for shopper in shoppers:
        headers = {"Cookie": f"session={shopper.session_cookie}"}
        visits += [Request(name, "GET", path, headers=headers)
                   for name, path in PAGES.items() for _ in range(args.rounds)]
    rng.shuffle(visits)
    warmup = [Request(name, "GET", path, headers=visits[0].headers) for name, path in PAGES.items()]

    with Gunicorn(env, workers=args.workers) as server:
        run_load(server.url, warmup * 5, args.clients)
        results, wall = run_load(server.url, visits, args.clients)
    pages = {name: summarise([r for r in results if r.label == name], wall) for name in PAGES}
    for name in PAGES:  # per-page throughput is shared wall time: report the total instead
        pages[name].pop("rps")
    overall = summarise(results, wall)
    ok = all(p["statuses"] == {"200": args.clients * args.rounds} for p in pages.values())
    summary = {"bench": "pages", "clients": args.clients, "rounds": args.rounds,
               "workers": args.workers, "ok": ok, "pages": pages,
               "requests": overall["requests"], "rps": overall["rps"]}
    for name, page in pages.items():
        print(f"{name:10} p50 {page['p50_ms']:8.2f} ms  p99 {page['p99_ms']:8.2f} ms  "
              f"{page['statuses']}", file=sys.stderr)
    print(f"all pages  {overall['rps']:.1f} requests/s", file=sys.stderr)
    print("SUMMARY " + json.dumps(summary, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
