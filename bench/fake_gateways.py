"""Stripe and Razorpay for benchmarks: the test suite's fakes (tests/fakes) on local
HTTP servers in this process, and the settings that point a shop at them.

The shop under test (gunicorn workers) and this process's own app both talk to
the fakes through the real `stripe` and `razorpay` SDKs over HTTP, so checkout,
return verification and webhook handlers run exactly as against the real APIs.

    with FakeGateways(["test", "stripe", "razorpay"]) as fakes:
        env = app_env(url, secret_key=..., webhook_secret=..., **fakes.settings())
        app = create_app({..., **fakes.settings()})
"""
from __future__ import annotations

import logging

from pytest_httpserver import HTTPServer

from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe

# Test-mode keys (Stripe checks that a test key gets livemode=false events).
STRIPE_SETTINGS = {"STRIPE_SECRET_KEY": "sk_test_bench", "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
                   "STRIPE_WEBHOOK_SECRET": "whsec_bench_stripe"}
RAZORPAY_SETTINGS = {"RAZORPAY_KEY_ID": "rzp_test_BenchKey0001",
                     "RAZORPAY_KEY_SECRET": "rzp_bench_key_secret",
                     "RAZORPAY_WEBHOOK_SECRET": "whsec_bench_razorpay"}
FAKED = ("stripe", "razorpay")


class FakeGateways:
    """A threaded local server and fake for each of `gateways` that has one
    (the built-in test gateway needs none); `stripe` / `razorpay` are the fakes."""

    def __init__(self, gateways):
        self.names = [g for g in gateways if g in FAKED]
        self.servers: list[HTTPServer] = []
        self.stripe: FakeStripe | None = None
        self.razorpay: FakeRazorpay | None = None

    def _server(self) -> HTTPServer:
        server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        server.start()
        self.servers.append(server)
        return server

    def start(self) -> "FakeGateways":
        # One INFO line per fake request (werkzeug) and per SDK call (stripe) would bury
        # the benchmark's own output.
        for name in ("werkzeug", "stripe"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if "stripe" in self.names:
            self.stripe = FakeStripe(self._server())
        if "razorpay" in self.names:
            self.razorpay = FakeRazorpay(self._server(), key_id=RAZORPAY_SETTINGS["RAZORPAY_KEY_ID"],
                                         key_secret=RAZORPAY_SETTINGS["RAZORPAY_KEY_SECRET"])
        return self

    def settings(self) -> dict[str, str]:
        """Keys, webhook secrets and API bases of the faked gateways (config or env)."""
        settings = {}
        if self.stripe is not None:
            settings.update(STRIPE_SETTINGS, STRIPE_API_BASE=self.stripe.url)
        if self.razorpay is not None:
            settings.update(RAZORPAY_SETTINGS, RAZORPAY_API_BASE=self.razorpay.base_url)
        return settings

    def api_calls(self) -> dict[str, int]:
        """How many API requests each fake has answered so far."""
        return {name: len(fake.requests) for name, fake in
                (("stripe", self.stripe), ("razorpay", self.razorpay)) if fake is not None}

    def stop(self) -> None:
        for server in self.servers:
            if server.is_running():
                server.stop()
        self.servers.clear()

    def __enter__(self) -> "FakeGateways":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
