"""Fixtures for the browser journeys: a gunicorn-served shop and headless Chromium.

The shop runs under a real gunicorn on 127.0.0.1 with its own SQLite file
(migrated with `flask db upgrade`, seeded with `flask seed`). Its test gateway
delivers webhooks over HTTP to the same server, a moment after the redirect,
as real gateways do.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bench.server import Gunicorn, app_env, free_port, prepare_database

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
WEBHOOK_DELAY_SECONDS = 1


def _unavailable(reason: str):
    """Outside CI a missing browser skips; in CI (.ci/run installs it) it fails."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI: .ci/run should have installed it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def live_shop():
    """The shop under gunicorn (2 workers) on its own SQLite database."""
    workdir = tempfile.mkdtemp(prefix="tiffin-e2e-")
    port = free_port()
    env = app_env(f"sqlite:///{workdir}/shop.db", secret_key="e2e-secret-key-" + "x" * 20,
                  webhook_secret="whsec_e2e_test_gateway",
                  TEST_GATEWAY_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/test",
                  TEST_GATEWAY_WEBHOOK_DELAY_SECONDS=WEBHOOK_DELAY_SECONDS,
                  CHECKOUT_RATE_LIMIT="100 per minute")
    prepare_database(env)
    server = Gunicorn(env, workers=2, port=port, log_path=f"{workdir}/gunicorn.log").start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing (Debian package `chromium`: apt-get install -y chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def shopper(browser, live_shop, request):
    """A fresh browser context (no cookies) with a page that records console errors."""
    from tests.e2e.journeys import Shopper

    context = browser.new_context(base_url=live_shop.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    shopper = Shopper(page, ARTIFACTS, request.node.name)
    yield shopper
    context.close()
