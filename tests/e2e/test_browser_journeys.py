"""Shopper journeys in headless Chromium against the shop served by gunicorn.

Every page a journey reaches is checked for console errors and for horizontal
overflow at 375 px, and screenshotted (test-artifacts/e2e/<test>/).
"""
import re

import pytest

pytestmark = pytest.mark.browser


def buy_lunch_plan(shopper):
    shopper.register()
    shopper.pay("Everyday Lunch")
    shopper.page.wait_for_url(re.compile(r"/checkout/success/TF-[0-9A-F]{12}$"))


def test_register_browse_buy_plan_shows_subscription_and_credits(shopper):
    buy_lunch_plan(shopper)
    page = shopper.page
    assert "your payment is confirmed" in page.get_by_role("heading", level=1).inner_text()
    assert shopper.text("subscription-status") == "active"
    assert shopper.text("meal-credits") == "20"
    assert "Everyday Lunch" in page.inner_text("[data-testid=success]")
    shopper.check_page("success")


def test_declined_payment_shows_code_and_shopper_can_try_again(shopper):
    shopper.register()
    shopper.allowed_statuses.add(402)  # the decline page is answered with HTTP 402
    shopper.pay("Everyday Lunch", outcome="decline", reason="insufficient_funds")
    page = shopper.page
    assert shopper.text("error-code") == "PAYMENT_DECLINED"
    assert "Your card has insufficient funds." in page.inner_text("[data-testid=error]")
    shopper.check_page("declined")

    page.get_by_role("link", name="Back to plans").click()
    shopper.pay("Everyday Lunch")
    page.wait_for_url(re.compile(r"/checkout/success/"))
    assert shopper.text("subscription-status") == "active"
    assert shopper.text("meal-credits") == "20"
    shopper.check_page("success-after-retry")


def test_redirect_never_returns_account_shows_subscription_once_webhook_lands(shopper):
    shopper.register()
    shopper.pay("Everyday Lunch", outcome="pay_no_redirect")
    page = shopper.page
    assert "redirect back to the shop was" in page.get_by_role("heading", level=1).inner_text()
    shopper.check_page("redirect-lost")

    assert shopper.wait_for_subscription_on_account() == "active"
    assert "Meal credits: 20" in shopper.text("meal-credits")
    assert "Everyday Lunch" in page.inner_text("#subscription")
    shopper.check_page("account-after-webhook")


def test_buy_addon_pack_adds_meals(shopper):
    buy_lunch_plan(shopper)
    shopper.pay("Extra Meals ×5")
    page = shopper.page
    page.wait_for_url(re.compile(r"/checkout/success/"))
    assert "Extra Meals ×5" in page.inner_text("[data-testid=success]")
    assert shopper.text("meal-credits") == "25"
    shopper.check_page("addon-success")

    shopper.account()
    assert "Meal credits: 25" in shopper.text("meal-credits")
    assert "(20 from your plan, 5 extra)" in shopper.text("meal-credits")
    shopper.check_page("account-with-addon")


def change_plan_to_family(shopper):
    """Preview, then pay the difference on the test gateway (an upgrade is not free)."""
    buy_lunch_plan(shopper)
    shopper.account()
    page = shopper.page
    page.select_option("#plan", "family-monthly")
    page.get_by_role("button", name="Change plan").click()
    page.get_by_test_id("confirm-plan-change").click()
    page.wait_for_url("**/test-gateway/pay/**")
    page.get_by_role("button", name="Submit payment").click()
    page.wait_for_url(re.compile(r"/checkout/success/"))
    shopper.account()


def test_change_plan(shopper):
    change_plan_to_family(shopper)
    page = shopper.page
    assert "Family Dinner" in page.inner_text("#subscription")
    assert "Meal credits: 40" in shopper.text("meal-credits")
    assert shopper.text("subscription-status") == "active"
    shopper.check_page("plan-changed")


def test_account_after_plan_change_fits_phone_width(shopper):
    change_plan_to_family(shopper)
    shopper.check_page("plan-changed")


def test_cancel_at_period_end(shopper):
    buy_lunch_plan(shopper)
    shopper.account()
    page = shopper.page
    page.get_by_role("button", name="Cancel at period end").click()
    page.wait_for_load_state("load")
    assert "Your plan will end at the close of the current period." in page.inner_text("body")
    assert page.get_by_test_id("ends-at-period-end").count() == 1
    assert page.get_by_role("button", name="Keep my plan").count() == 1
    shopper.check_page("canceled")
