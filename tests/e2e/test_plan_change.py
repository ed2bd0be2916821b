"""Plan change in headless Chromium, at 1280 px and 390 px: open the preview, confirm
(paying the difference on the test gateway for a dearer plan), see the new plan.

Screenshots land in test-artifacts/e2e/<test>/.
"""
import re

import pytest

from app.money import format_money
from tests.e2e.test_browser_journeys import buy_lunch_plan

pytestmark = pytest.mark.browser
WIDTHS = [1280, 390]


def _capture(shopper, name: str, width: int) -> None:
    """Console clean, no sideways scroll at this width, a screenshot."""
    page = shopper.page
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_load_state("load")
    assert shopper.unexpected_console_errors() == [], f"{name}: console errors on {page.url}"
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{name}: {overflow}px of horizontal overflow at {width}px"
    page.screenshot(path=str(shopper.folder / f"{name}-{width}.png"), full_page=True)


def _open_preview(shopper, plan_slug: str) -> None:
    page = shopper.page
    shopper.account()
    page.select_option("#plan", plan_slug)
    page.get_by_role("button", name="Change plan").click()
    page.wait_for_url(re.compile(rf"/account/subscription/change\?plan={plan_slug}$"))


@pytest.mark.parametrize("width", WIDTHS)
def test_upgrade_preview_then_pay_the_difference_then_the_new_plan(shopper, width):
    page = shopper.page
    buy_lunch_plan(shopper)  # checks its pages at both widths, then leaves 1280 px
    page.set_viewport_size({"width": width, "height": 900})
    difference = format_money(549900 - 299900, "INR")

    _open_preview(shopper, "family-monthly")
    assert page.get_by_role("heading", level=1).inner_text() == "Change plan to Family Dinner"
    assert "Family Dinner" in shopper.text("plan-change-new-plan")
    charge = shopper.text("plan-change-charge")
    assert difference in charge and "full difference" in charge and "ends on" in charge
    assert "If it is declined, you keep Everyday Lunch" in shopper.text("plan-change-when")
    assert "from 20 to 40 once the payment goes through" in shopper.text("plan-change-credits")
    _capture(shopper, "preview-upgrade", width)

    page.get_by_role("button", name=f"Pay {difference} and change plan").click()
    page.wait_for_url("**/test-gateway/pay/**")
    assert difference in page.get_by_role("heading", level=1).inner_text()
    _capture(shopper, "pay-difference", width)
    page.get_by_role("button", name="Submit payment").click()
    page.wait_for_url(re.compile(r"/checkout/success/TF-[0-9A-F]{12}$"))
    assert "Family Dinner" in page.inner_text("[data-testid=success]")
    _capture(shopper, "difference-paid", width)

    shopper.account()
    assert "Family Dinner" in page.inner_text("#subscription")
    assert "Meal credits: 40" in shopper.text("meal-credits")
    _capture(shopper, "account-after-upgrade", width)


@pytest.mark.parametrize("width", WIDTHS)
def test_downgrade_preview_then_confirm_then_the_new_plan(shopper, width):
    page = shopper.page
    buy_lunch_plan(shopper)  # checks its pages at both widths, then leaves 1280 px
    page.set_viewport_size({"width": width, "height": 900})

    _open_preview(shopper, "trial-week")
    assert "nothing is refunded" in shopper.text("plan-change-charge")
    assert "Now" in shopper.text("plan-change-when")
    assert "from 20 to 5 now" in shopper.text("plan-change-credits")
    _capture(shopper, "preview-downgrade", width)

    page.get_by_test_id("confirm-plan-change").click()
    page.wait_for_url("**/account/")
    assert "Your plan has been changed." in page.inner_text("body")
    assert "Trial Week" in page.inner_text("#subscription")
    assert "Meal credits: 5" in shopper.text("meal-credits")
    _capture(shopper, "account-after-downgrade", width)
