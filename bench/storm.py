"""A bounded payment storm against a running shop (gunicorn, several workers).

N distinct payments, mixed across gateways (the test gateway, Stripe and
Razorpay by default), each delivered as its success redirect (Razorpay: its
checkout callback) plus COPIES copies of its signed webhook, all shuffled and
fired by CLIENTS concurrent clients over loopback. Stripe and Razorpay are the
test suite's fakes on local servers in this process (bench/fake_gateways.py),
which the shop's gateway adapters call through the official SDKs. Then the
database must hold exactly N paid orders, N subscriptions, one credit grant and
one confirmation email per payment, every event stored once and processed; no
response may be a 5xx; every check must also hold for each gateway's share; and
the monitor (utils/payment_subscription_monitor.py, when present) must report
healthy.

    python bench/storm.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_e2e_bench \
        --reset --payments 200 --copies 5 --clients 20 --workers 4 --gateways test,stripe,razorpay

Prints one line `SUMMARY {json}`; exits 0 when every check holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests
import sqlalchemy as sa

from bench.fake_gateways import FakeGateways
from bench.payments import SENDERS, prepare_payments
from bench.server import PYTHON, ROOT, Gunicorn, app_env, prepare_database

RECURRING_PLANS = ["trial-week", "lunch-monthly", "family-monthly"]
GATEWAYS = ["test", "stripe", "razorpay"]
REQUEST_TIMEOUT_SECONDS = 30


def _error_code(html: str) -> str:
    """The error code an error page names (data-testid="error-code"), if any."""
    import re

    match = re.search(r'data-testid="error-code">([A-Z_]+)<', html)
    return match.group(1) if match else html[:200]


def _fire(base_url: str, jobs: list, clients: int, deadline: float) -> dict:
    """Send every job from `clients` threads; count statuses (in all and per gateway),
    stop at the deadline."""
    local = threading.local()
    statuses: Counter = Counter()
    by_gateway: dict[str, Counter] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            # One connection pool per client thread, but no cookie jar: every
            # request carries only the cookie of the shopper it acts for.
            local.session = requests.Session()
            local.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        return local.session

    def tally(payment, got: list[str]) -> None:
        with lock:
            statuses.update(got)
            by_gateway.setdefault(payment.gateway, Counter()).update(got)

    def run(job):
        kind, payment = job
        if time.monotonic() > deadline:
            tally(payment, ["not_sent_deadline"])
            return
        http = session()
        try:
            if kind == "redirect":
                cookies = {"session": payment.session_cookie}
                # A redirect back (GET), or the signed result a gateway's script posts.
                method = "GET" if payment.redirect_form is None else "POST"
                r = http.request(method, base_url + payment.redirect_path, cookies=cookies,
                                 data=payment.redirect_form, allow_redirects=False,
                                 timeout=REQUEST_TIMEOUT_SECONDS)
                got = [f"redirect:{r.status_code}"]
                if r.status_code not in (303,):
                    with lock:
                        errors.append(f"{payment.gateway} redirect {payment.order_reference}: "
                                      f"{r.status_code} {_error_code(r.text)}")
                if r.status_code == 303:  # the shopper's browser follows to the success page
                    page = http.get(base_url + r.headers["Location"], cookies=cookies,
                                    allow_redirects=False, timeout=REQUEST_TIMEOUT_SECONDS)
                    got.append(f"success_page:{page.status_code}")
            else:
                r = http.post(base_url + payment.webhook_path, data=payment.webhook_body,
                              headers=payment.delivery_headers(), timeout=REQUEST_TIMEOUT_SECONDS)
                got = [f"webhook:{r.status_code}"]
                if r.status_code != 200:
                    with lock:
                        errors.append(f"{payment.gateway} webhook {payment.order_reference}: "
                                      f"{r.status_code} {r.text[:200]}")
        except requests.RequestException as exc:
            got = [f"{kind}:error"]
            with lock:
                errors.append(f"{payment.gateway} {kind} {payment.order_reference}: {exc}")
        tally(payment, got)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(run, jobs))
    return {"statuses": dict(statuses), "errors": errors[:20],
            "by_gateway": {g: dict(c) for g, c in by_gateway.items()}}


def verify(payments: list) -> dict:
    """What the database holds for these payments (call inside an app context)."""
    from app.extensions import db

    db.session.remove()
    keys = sa.bindparam("keys", expanding=True)

    def q(sql: str, values: list) -> list:
        return db.session.execute(sa.text(sql).bindparams(keys), {"keys": values}).all()

    order_ids = [p.order_id for p in payments]
    user_ids = [p.user_id for p in payments]
    orders = dict(q("SELECT id, status FROM orders WHERE id IN :keys", order_ids))
    subs = Counter(dict(q("SELECT order_id, count(*) FROM subscriptions WHERE order_id IN :keys "
                          "GROUP BY order_id", order_ids)))
    users_with_subs = q("SELECT user_id, count(*) FROM subscriptions WHERE user_id IN :keys "
                        "GROUP BY user_id", user_ids)
    grants = Counter(dict(q("SELECT user_id, count(*) FROM credit_ledger WHERE user_id IN :keys "
                            "GROUP BY user_id", user_ids)))
    grant_keys = Counter(dict(q("SELECT source_key, count(*) FROM credit_ledger "
                                "WHERE source_key IN :keys GROUP BY source_key",
                                [f"order:{i}" for i in order_ids])))
    emails = Counter(dict(q("SELECT user_id, count(*) FROM notification_outbox "
                            "WHERE user_id IN :keys AND kind = 'payment_confirmed' "
                            "GROUP BY user_id", user_ids)))
    events = Counter(dict(q("SELECT status, count(*) FROM webhook_events "
                            "WHERE gateway || ':' || event_id IN :keys GROUP BY status",
                            [f"{p.gateway}:{p.event_id}" for p in payments])))
    credits = dict(q("SELECT id, plan_meal_credits + addon_meal_credits FROM users "
                     "WHERE id IN :keys", user_ids))
    wrong_credits = sum(1 for p in payments if credits.get(p.user_id) != p.meals)
    n = len(payments)
    return {
        "paid_orders": sum(1 for s in orders.values() if s == "paid"),
        "subscriptions": sum(subs.values()),
        "users_with_one_subscription": sum(1 for _, c in users_with_subs if c == 1),
        "orders_with_one_grant": sum(1 for c in grant_keys.values() if c == 1),
        "credit_rows": sum(grants.values()),
        "users_with_one_email": sum(1 for c in emails.values() if c == 1),
        "confirmation_emails": sum(emails.values()),
        "events_stored": sum(events.values()),
        "events_processed": events.get("processed", 0),
        "users_with_wrong_credits": wrong_credits,
        "expected": n,
    }


def run_monitor(database_url: str, env: dict) -> dict:
    """The ops monitor's verdict over the whole database, when it is installed."""
    script = ROOT / "utils" / "payment_subscription_monitor.py"
    if not script.exists():
        return {"monitor": "absent"}
    done = subprocess.run([PYTHON, str(script), "--check", "--json"], cwd=ROOT,
                          env={**env, "DATABASE_URL": database_url}, capture_output=True, text=True,
                          timeout=300)
    verdict = {0: "healthy", 1: "warnings", 2: "critical"}.get(done.returncode, "error")
    return {"monitor": verdict, "monitor_exit": done.returncode,
            "monitor_output": (done.stdout + done.stderr)[-2000:] if done.returncode else ""}


def _checks(statuses: dict, held: dict, n: int, copies: int) -> dict:
    """The storm's checks over `n` payments: their responses and what the database holds."""
    five_xx = sum(c for k, c in statuses.items() if k.rsplit(":", 1)[-1].startswith("5"))
    expected_statuses = {k: v for k, v in {"redirect:303": n, "success_page:200": n,
                                           "webhook:200": n * copies}.items() if v}
    return {
        "no_5xx": five_xx == 0,
        "all_responses_as_expected": statuses == expected_statuses,
        "paid_orders": held["paid_orders"] == n,
        "subscriptions": held["subscriptions"] == n and held["users_with_one_subscription"] == n,
        "one_credit_grant_each": held["orders_with_one_grant"] == n and held["credit_rows"] == n,
        "one_email_each": held["users_with_one_email"] == n and held["confirmation_emails"] == n,
        "events_stored_once_and_processed": held["events_stored"] == n
        and held["events_processed"] == n,
        "credits_right": held["users_with_wrong_credits"] == 0,
    }


def run_storm(app, base_url: str, *, payments: int, copies: int, clients: int,
              max_seconds: float, gateways=("test",), seed: int | None = None,
              fakes: FakeGateways | None = None) -> dict:
    """Prepare, fire and verify one storm; returns the summary (`ok` says if it held,
    in all and for each gateway's share). Stripe and Razorpay need `fakes`, which
    `app` and the shop at `base_url` must both be configured to talk to."""
    rng = random.Random(seed)
    prefix = f"storm-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with app.app_context():
        batch = prepare_payments(app, payments, gateways=list(gateways), plans=RECURRING_PLANS,
                                 prefix=prefix, rng=rng, fakes=fakes)
    prepared = time.monotonic()
    jobs = [("redirect", p) for p in batch] + [("webhook", p) for p in batch for _ in range(copies)]
    rng.shuffle(jobs)
    calls_before = fakes.api_calls() if fakes is not None else {}
    fired = _fire(base_url, jobs, clients, deadline=prepared + max_seconds)
    fired_seconds = time.monotonic() - prepared
    calls_after = fakes.api_calls() if fakes is not None else {}
    by_gateway = {}
    with app.app_context():
        held = verify(batch)
        for name in gateways:
            share = [p for p in batch if p.gateway == name]
            statuses = fired["by_gateway"].get(name, {})
            share_held = verify(share)
            checks = _checks(statuses, share_held, len(share), copies)
            by_gateway[name] = {"payments": len(share), "ok": all(checks.values()),
                                "statuses": statuses, "held": share_held, "checks": checks}
            if name in calls_after:  # what the shop asked the gateway's API meanwhile
                by_gateway[name]["api_calls"] = calls_after[name] - calls_before[name]
    statuses = fired["statuses"]
    five_xx = sum(c for k, c in statuses.items() if k.rsplit(":", 1)[-1].startswith("5"))
    checks = _checks(statuses, held, payments, copies)
    checks["each_gateway_holds"] = all(g["ok"] for g in by_gateway.values())
    return {
        "bench": "storm", "ok": all(checks.values()), "payments": payments, "copies": copies,
        "clients": clients, "gateways": list(gateways), "requests": len(jobs) + statuses.get(
            "success_page:200", 0), "five_xx": five_xx, "seconds": round(fired_seconds, 2),
        "prepare_seconds": round(prepared - started, 2),
        "requests_per_second": round((len(jobs) + payments) / fired_seconds, 1),
        "statuses": statuses, "held": held, "checks": checks, "by_gateway": by_gateway,
        "errors": fired["errors"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tiffin_e2e_bench"))
    parser.add_argument("--url", help="a running shop to storm (default: start gunicorn here)")
    parser.add_argument("--secret-key", default=os.environ.get("SECRET_KEY", "bench-secret-key-" + "x" * 24),
                        help="the shop's SECRET_KEY (to mint login cookies)")
    parser.add_argument("--webhook-secret", default=os.environ.get(
        "TEST_GATEWAY_WEBHOOK_SECRET", "whsec_bench_test_gateway"))
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--copies", type=int, default=5, help="webhook copies per payment")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (own server)")
    parser.add_argument("--gateways", default=",".join(GATEWAYS),
                        help=f"comma list of {sorted(SENDERS)}, mixed in random order; Stripe "
                             "and Razorpay are local fakes this process serves")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop sending after this")
    parser.add_argument("--reset", action="store_true", help="drop and rebuild the schema first")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    gateways = [g.strip() for g in args.gateways.split(",") if g.strip()]
    unknown = sorted(set(gateways) - set(SENDERS))
    if unknown or not gateways:
        parser.error(f"--gateways: unknown {unknown}; choose from {sorted(SENDERS)}")
    if args.url and set(gateways) != {"test"}:
        parser.error("--url storms a shop of your own: only --gateways test, since Stripe and "
                     "Razorpay are fakes that this process serves to the shop it starts")

    from app import create_app

    with FakeGateways(gateways) as fakes:
        env = app_env(args.database_url, secret_key=args.secret_key,
                      webhook_secret=args.webhook_secret, CHECKOUT_RATE_LIMIT="10000 per minute",
                      **fakes.settings())
        app = create_app({"TIFFIN_ENV": "development", "SQLALCHEMY_DATABASE_URI": args.database_url,
                          "SECRET_KEY": args.secret_key, "TEST_GATEWAY_ENABLED": True,
                          "TEST_GATEWAY_WEBHOOK_SECRET": args.webhook_secret,
                          "RATELIMIT_ENABLED": False, **fakes.settings()})
        server = None
        if args.url is None:
            prepare_database(env, reset=args.reset)
            server = Gunicorn(env, workers=args.workers).start()
        try:
            summary = run_storm(app, args.url or server.url, payments=args.payments,
                                copies=args.copies, clients=args.clients,
                                max_seconds=args.max_seconds, gateways=gateways, seed=args.seed,
                                fakes=fakes)
        finally:
            if server is not None:
                server.stop()
    summary.update(run_monitor(args.database_url, env))
    summary["ok"] = summary["ok"] and summary["monitor"] in ("healthy", "absent")
    summary["workers"] = args.workers if server is not None else None
    for name, held in summary["checks"].items():
        print(f"{'ok  ' if held else 'FAIL'} {name}", file=sys.stderr)
    for gateway, share in summary["by_gateway"].items():
        print(f"{'ok  ' if share['ok'] else 'FAIL'} {gateway}: {share['payments']} payments, "
              f"failing {[c for c, held in share['checks'].items() if not held]}", file=sys.stderr)
    print("SUMMARY " + json.dumps(summary, sort_keys=True))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
