"""The payment state machine, explored by Hypothesis (see machine.py), and the
shrunk sequences it found, kept as plain regression tests."""
from __future__ import annotations

from hypothesis.stateful import run_state_machine_as_test

from tests.statemachine.conftest import machine_settings
from tests.statemachine.machine import PaymentMachine, Replay


def test_payment_machine_keeps_the_promise_under_every_interleaving(shop):
    examples = []

    def machine():
        examples.append(1)
        return PaymentMachine(shop)

    try:
        run_state_machine_as_test(machine, settings=machine_settings())
    finally:  # the deep run's count (pytest -s shows it)
        print(f"\npayment machine: {len(examples)} examples run")


def test_a_return_after_the_bank_declined_an_async_stripe_payment_says_declined(shop):
    """Found by the machine: Stripe's session still reads "complete, unpaid" after its
    async payment failed, and the return page said "received, being confirmed" (202)."""
    state = Replay(shop)
    state.a_shopper_starts_a_checkout(gateway="stripe", plan="meal-pack-5", shopper=0)
    state.the_gateway_authorises_late(checkout=0)
    state.the_gateway_declines(checkout=0)
    state.a_webhook_copy_arrives(copy=1, crash=False)  # checkout.session.async_payment_failed
    state.the_shoppers_browser_comes_back(checkout=0)
    state.teardown()


def test_a_stripe_plan_change_right_after_renewals_is_previewed(shop):
    """Found by the machine (a defect of the machine's own model): renewals moved the fake's
    period into the future, so Stripe refused the preview's proration date (503)."""
    state = Replay(shop)
    state.a_shopper_starts_a_checkout(gateway="stripe", plan="lunch-monthly", shopper=0)
    state.the_gateway_takes_the_payment(checkout=0)
    state.the_operator_reconciles()
    state.the_gateway_renews_a_subscription(subscription=0)
    state.the_gateway_renews_a_subscription(subscription=0)
    state.the_shopper_changes_plan(plan="trial-week", shopper=0)
    state.teardown()
