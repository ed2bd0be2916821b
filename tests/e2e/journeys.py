"""A shopper driving headless Chromium, with the checks every page must pass:
no console errors, no horizontal overflow at phone width, a screenshot saved."""
from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
PASSWORD = "correct horse 1"


class Shopper:
    def __init__(self, page, artifacts: Path, test_name: str):
        self.page = page
        self.folder = artifacts / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.console_errors: list[tuple[str, str]] = []  # (text, url)
        self.allowed_statuses: set[int] = set()
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(
            (msg.text, msg.location.get("url", ""))))
        page.on("pageerror", lambda exc: self.console_errors.append((f"pageerror: {exc}", "")))
        self.email = f"shopper-{uuid.uuid4().hex[:10]}@example.com"

    # --- checks ---------------------------------------------------------------
    def unexpected_console_errors(self) -> list[str]:
        """Console errors, except Chromium's note on a page we expect to be non-2xx
        (an error page is answered with its code's HTTP status, e.g. 402)."""
        expected = tuple(f"status of {code} " for code in self.allowed_statuses)
        errors = []
        for text, url in self.console_errors:
            load_failure = text.startswith("Failed to load resource")
            if load_failure and any(s in text for s in expected):
                continue
            errors.append(f"{text} ({url})")
        return errors

    def check_page(self, name: str, *, phone: bool = True) -> None:
        """Console clean, no sideways scroll at 375 px, screenshots at both widths."""
        page = self.page
        page.wait_for_load_state("load")
        errors = self.unexpected_console_errors()
        assert errors == [], f"{name}: console errors on {page.url}: {errors}"
        page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)
        page.set_viewport_size(PHONE)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        page.screenshot(path=str(self.folder / f"{name}-phone.png"), full_page=True)
        page.set_viewport_size(DESKTOP)
        if phone:
            self.assert_fits_phone(name, overflow)

    def assert_fits_phone(self, name: str, overflow: int) -> None:
        page = self.page
        assert overflow <= 0, f"{name}: {overflow}px of horizontal overflow at 375px on {page.url}"

    def text(self, test_id: str) -> str:
        """The element's text as written (CSS may capitalise what is shown)."""
        return " ".join(self.page.get_by_test_id(test_id).text_content().split())

    # --- steps ----------------------------------------------------------------
    def register(self) -> None:
        page = self.page
        page.goto("/register")
        self.check_page("register")
        page.get_by_label("Name").fill("Asha Shopper")
        page.get_by_label("Email").fill(self.email)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Confirm password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        page.wait_for_url("**/")
        assert "Welcome to Tiffin" in page.inner_text("body")

    def open_plan_from_catalogue(self, plan_name: str) -> None:
        page = self.page
        page.goto("/")
        self.check_page("catalogue")
        page.get_by_role("link", name=f"Choose {plan_name}").click()
        page.wait_for_load_state("load")
        assert page.get_by_role("heading", level=1).inner_text() == plan_name
        self.check_page("plan")

    def pay(self, plan_name: str, outcome: str = "pay", reason: str | None = None) -> None:
        """From the catalogue to the test gateway's hosted page, then submit it."""
        page = self.page
        self.open_plan_from_catalogue(plan_name)
        page.get_by_role("button", name=re.compile("Continue to payment")).click()
        page.wait_for_url("**/test-gateway/pay/**")
        self.check_page("test-gateway")
        page.locator(f'input[name="outcome"][value="{outcome}"]').check()
        if reason:
            page.select_option("#reason", reason)
        page.get_by_role("button", name="Submit payment").click()
        page.wait_for_load_state("load")

    def account(self) -> None:
        self.page.goto("/account/")
        self.page.wait_for_load_state("load")

    def wait_for_subscription_on_account(self, deadline_seconds: float = 30) -> str:
        """Reload the account page until the webhook has landed (bounded)."""
        deadline = time.monotonic() + deadline_seconds
        while True:
            self.account()
            status = self.page.get_by_test_id("subscription-status")
            if status.count():
                return self.text("subscription-status")
            assert time.monotonic() < deadline, "the webhook never showed on the account page"
            self.page.wait_for_timeout(250)
