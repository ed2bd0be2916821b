"""Every unfinished-checkout state, as a shopper sees it in headless Chromium at
1280 px and 390 px (issue 14, parts 1-3, 5, 6). Each state's page is checked for
its words, console errors and sideways scrolling, and screenshotted at both widths
into test-artifacts/e2e/<test>/.

This shop delivers the test gateway's webhooks in-process (as `make run` does), so
the "redirect lost" journey exercises the delivery that once signed shoppers out.
States that need the clock or the gateway to misbehave (expired, confirming, could
not ask) are set up by writing the order's row, as time or the gateway would.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from bench.server import Gunicorn, app_env, free_port, prepare_database
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.journeys import DESKTOP, Shopper

pytestmark = pytest.mark.browser
PHONE_390 = {"width": 390, "height": 844}
REFERENCE = re.compile(r"TF-[0-9A-F]{12}")


@pytest.fixture(scope="module")
def shop():
    """The shop under gunicorn with in-process webhook delivery (like `make run`)."""
    workdir = tempfile.mkdtemp(prefix="tiffin-e2e-states-")
    env = app_env(f"sqlite:///{workdir}/shop.db", secret_key="e2e-states-key-" + "x" * 20,
                  webhook_secret="whsec_e2e_states", CHECKOUT_RATE_LIMIT="100 per minute")
    prepare_database(env)
    server = Gunicorn(env, workers=2, port=free_port(), log_path=f"{workdir}/gunicorn.log").start()
    server.engine = sa.create_engine(env["DATABASE_URL"])
    yield server
    server.engine.dispose()
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


class StateShopper(Shopper):
    def snap(self, name: str) -> None:
        """Console clean; no sideways scroll at 390 px; screenshots at 1280 and 390 px."""
        page = self.page
        page.wait_for_load_state("load")
        errors = self.unexpected_console_errors()
        assert errors == [], f"{name}: console errors on {page.url}: {errors}"
        page.set_viewport_size(DESKTOP)
        page.screenshot(path=str(self.folder / f"{name}-1280.png"), full_page=True)
        page.set_viewport_size(PHONE_390)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        page.screenshot(path=str(self.folder / f"{name}-390.png"), full_page=True)
        page.set_viewport_size(DESKTOP)
        assert overflow <= 0, f"{name}: {overflow}px of sideways scroll at 390 px on {page.url}"

    def body(self) -> str:
        return self.page.inner_text("body")

    def start_checkout(self, plan_name: str = "Everyday Lunch") -> str:
        """To the test gateway's page; returns the order reference."""
        self.open_plan_from_catalogue(plan_name)
        self.page.get_by_role("button", name=re.compile("Continue to payment")).click()
        self.page.wait_for_url("**/test-gateway/pay/**")
        return REFERENCE.search(self.body()).group(0)


@pytest.fixture
def shopper(browser, shop, request):
    context = browser.new_context(base_url=shop.url, viewport=DESKTOP)
    page = context.new_page()
    visitor = StateShopper(page, ARTIFACTS, request.node.name)
    visitor.allowed_statuses.update({202, 402, 409, 410})  # state pages answer with their code
    visitor.register()
    yield visitor
    context.close()


def set_order(shop, reference: str, **values) -> None:
    """Write an order's row, as the clock or the gateway would have changed it."""
    with shop.engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET " + ", ".join(f"{k} = :{k}" for k in values)
                             + " WHERE reference = :reference"), {**values, "reference": reference})


def ago(**delta) -> str:
    """A UTC time as the SQLite rows keep it (naive UTC)."""
    return (datetime.now(timezone.utc) - timedelta(**delta)).replace(tzinfo=None).isoformat(" ")


# --- 1. cancel -------------------------------------------------------------------
def test_cancel_from_the_gateway_page_says_not_charged(shopper):
    reference = shopper.start_checkout()
    page = shopper.page
    assert page.get_by_test_id("decline-reason").is_hidden()
    shopper.snap("test-gateway-page")
    page.locator('input[name="outcome"][value="decline"]').check()
    assert page.get_by_test_id("decline-reason").is_visible()
    shopper.snap("test-gateway-page-declining")

    page.get_by_role("link", name="Cancel and return to the shop").click()
    page.wait_for_url(f"**/checkout/cancel/{reference}")
    assert "Checkout cancelled" in page.get_by_role("heading", level=1).inner_text()
    assert "you have not been charged" in shopper.body()
    shopper.snap("cancelled")


def test_cancel_return_for_a_paid_order_shows_success(shopper):
    reference = shopper.start_checkout()
    shopper.page.get_by_role("button", name="Submit payment").click()
    shopper.page.wait_for_url(f"**/checkout/success/{reference}")

    shopper.page.goto(f"/checkout/cancel/{reference}")
    shopper.page.wait_for_url(f"**/checkout/success/{reference}")
    assert "your payment is confirmed" in shopper.page.get_by_role("heading", level=1).inner_text()
    assert "not been charged" not in shopper.body()
    shopper.snap("cancel-of-paid-order")


# --- 2. the pending page's states --------------------------------------------------
def test_abandoned_checkout_waits_for_the_shopper_and_continues(shopper):
    reference = shopper.start_checkout()
    page = shopper.page
    page.goto(f"/checkout/success/{reference}")
    assert shopper.text("error-code") == "PAYMENT_AWAITING_SHOPPER"
    assert "have not received a payment" in shopper.body()
    assert "not been charged" in shopper.body()
    assert "No need to pay again" not in shopper.body()
    assert page.locator('meta[http-equiv="refresh"]').count() == 0
    shopper.snap("waiting-for-you")

    page.get_by_test_id("continue-payment").click()
    page.wait_for_url("**/test-gateway/pay/**")
    assert reference in shopper.body()


def test_payment_received_is_confirming_and_refreshes(shop, shopper):
    reference = shopper.start_checkout()
    set_order(shop, reference, authorized_at=ago(seconds=5))
    shopper.page.goto(f"/checkout/success/{reference}")
    assert shopper.text("error-code") == "PAYMENT_PENDING_CONFIRMATION"
    assert "Your payment has been received" in shopper.body()
    assert "This page checks again every 5 seconds" in shopper.body()
    assert shopper.page.locator('meta[http-equiv="refresh"]').count() == 1
    shopper.snap("confirming")


def test_gateway_not_asked_yet_says_so(shop, shopper):
    reference = shopper.start_checkout()
    set_order(shop, reference, gateway_said="unreachable", gateway_checked_at=ago(seconds=1))
    shopper.page.goto(f"/checkout/success/{reference}")
    assert shopper.text("error-code") == "PAYMENT_PENDING_CONFIRMATION"
    assert "could not reach the payment provider yet" in shopper.body()
    assert "Your payment has been received" not in shopper.body()
    shopper.snap("could-not-ask")


def test_confirming_stops_refreshing_with_a_next_step(shop, shopper):
    reference = shopper.start_checkout()
    set_order(shop, reference, authorized_at=ago(minutes=20), returned_at=ago(minutes=20))
    shopper.page.goto(f"/checkout/success/{reference}")
    assert shopper.text("error-code") == "PAYMENT_PENDING_CONFIRMATION"
    assert shopper.page.locator('meta[http-equiv="refresh"]').count() == 0
    assert "stopped checking automatically" in shopper.text("refresh-stopped")
    assert shopper.text("support-ref").startswith("REF-")
    shopper.snap("refresh-stopped")


def test_lost_webhook_and_redirect_success_on_the_next_look(shopper):
    reference = shopper.start_checkout()
    page = shopper.page
    page.locator('input[name="outcome"][value="pay_no_webhook"]').check()
    # The redirect back is lost too: stop at the gateway's answer and look later.
    page.route("**/payments/test/return**", lambda route: route.abort())
    try:
        page.get_by_role("button", name="Submit payment").click()
        page.wait_for_timeout(500)
    finally:
        page.unroute("**/payments/test/return**")
    page.goto(f"/checkout/success/{reference}")
    assert "your payment is confirmed" in page.get_by_role("heading", level=1).inner_text()
    shopper.snap("lost-webhook-success")


# --- 3. expiry and the account page ------------------------------------------------
def test_account_lists_waiting_then_not_completed_checkouts(shop, shopper):
    reference = shopper.start_checkout("Extra Meals ×5")
    shopper.account()
    checkout = shopper.page.locator(f'[data-testid=checkout][data-reference="{reference}"]')
    assert "Waiting for payment" in checkout.inner_text()
    assert checkout.get_by_test_id("continue-payment").count() == 1
    assert reference not in shopper.page.locator("table").all_inner_texts().__str__()
    shopper.snap("account-waiting")

    set_order(shop, reference, checkout_expires_at=ago(minutes=1))
    shopper.account()
    checkout = shopper.page.locator(f'[data-testid=checkout][data-reference="{reference}"]')
    assert "Not completed — not charged" in checkout.inner_text()
    assert checkout.get_by_test_id("continue-payment").count() == 0
    shopper.snap("account-not-completed")

    shopper.page.goto(f"/checkout/success/{reference}")
    assert "Not completed — you were not charged" in shopper.body()
    assert shopper.text("error-code") == "PAYMENT_NOT_COMPLETED"
    shopper.snap("expired")


# --- 5. signed in stays signed in --------------------------------------------------
def test_redirect_lost_keeps_the_shopper_signed_in(shopper):
    shopper.start_checkout()
    page = shopper.page
    page.locator('input[name="outcome"][value="pay_no_redirect"]').check()
    page.get_by_role("button", name="Submit payment").click()
    page.wait_for_load_state("load")
    assert "redirect back to the shop was" in page.get_by_role("heading", level=1).inner_text()
    header = page.locator("header").inner_text()
    assert "Sign out" in header and "Sign in" not in header
    shopper.snap("redirect-lost-signed-in")

    page.get_by_role("link", name="Open my account").click()
    page.wait_for_load_state("load")
    header = page.locator("header").inner_text()
    assert "Sign out" in header and "Sign in" not in header
    assert page.get_by_test_id("subscription-status").count() == 1
    shopper.snap("account-after-redirect-lost")


# --- 6. the test gateway's page ----------------------------------------------------
def test_paid_session_shows_its_outcome_instead_of_the_form(shopper):
    shopper.start_checkout()
    page = shopper.page
    gateway_url = page.url
    page.get_by_role("button", name="Submit payment").click()
    page.wait_for_url("**/checkout/success/**")

    page.goto(gateway_url)
    assert "This payment has already been made" in shopper.body()
    assert page.get_by_role("button", name="Submit payment").count() == 0
    shopper.snap("gateway-already-paid")


def test_declined_session_shows_its_outcome_instead_of_the_form(shopper):
    shopper.start_checkout()
    page = shopper.page
    gateway_url = page.url
    page.locator('input[name="outcome"][value="decline"]').check()
    page.select_option("#reason", "expired_card")
    page.get_by_role("button", name="Submit payment").click()
    page.wait_for_load_state("load")
    assert shopper.text("error-code") == "PAYMENT_DECLINED"

    page.goto(gateway_url)
    assert "This payment was declined" in shopper.body()
    assert "Your card has expired." in shopper.body()
    assert page.get_by_role("button", name="Submit payment").count() == 0
    shopper.snap("gateway-already-declined")
