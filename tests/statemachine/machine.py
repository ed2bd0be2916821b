"""A model-based test of the payment state machine (Hypothesis stateful testing).

Shoppers, gateways, the network and the operator act in any order; after every
step the invariants compare the shop (its pages, CLI exit codes and rows) with
what the gateways hold. Rules pick their target with a plain integer index into
the candidates, so a shrunk failure prints as calls that replay as they are
(see test_payment_machine.py for the replayed regressions).

What the shop "has heard" of a payment: a return or callback that found it paid,
a webhook naming it that was stored and finished, or a reconcile run after it.
Only a payment the shop has heard of must have its paid order; before that the
pages must say "pending" — never "paid" for money the gateway does not hold.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import timedelta

import sqlalchemy as sa
import time_machine
from hypothesis import strategies as st
from hypothesis.stateful import (INVARIANT_MARKER, RuleBasedStateMachine, invariant,
                                 precondition, rule)

from app.extensions import db
from app.models import CreditLedgerEntry, Order, Subscription, User, WebhookEvent
from app.models.subscription import LIVE_STATUSES
from app.models.types import utcnow
from app.services.fulfilment import SETTLED
from tests.conftest import AuthActions
from tests.statemachine.conftest import PASSWORD
from tests.statemachine.gateways import PAID, Checkout

GATEWAYS = ("test", "stripe", "razorpay")
PLANS = ("lunch-monthly", "family-monthly", "meal-pack-5")
RECURRING = ("lunch-monthly", "family-monthly", "trial-week")
PICK = st.integers(min_value=0, max_value=30)  # an index into the candidates (mod their number)
SOMETIMES = st.sampled_from([False, False, False, True])
PARTIAL_REFUND_MINOR = 10_000
OUTDATED_CHANGE = "PLAN_CHANGE_OUTDATED"
EARLY_RENEWAL = "no local subscription"  # a renewal before its checkout: retried later, by design

# Holes other helpers are closing now (issue 13). While one is open, the machine
# tolerates exactly that symptom; each flag goes back to False once the fix is on main.
PENDING = {
    "13.3 razorpay reconcile matches subscriptions": False,
    "13.4 stripe and test gateway refunds": False,
    "truthpages: the cancel page leaves a paid order alone": False,
}


def error_code(html: str) -> str | None:
    match = re.search(r'data-testid="error-code">([A-Z_]+)<', html)
    return match.group(1) if match else None


def pick(candidates: list, index: int):
    return candidates[index % len(candidates)]


class Shopper:
    def __init__(self, index, client, user_id):
        self.index, self.client, self.user_id, self.alive = index, client, user_id, True

    def __repr__(self) -> str:
        return f"<shopper {self.index}{'' if self.alive else ' (deleted)'}>"


class PaymentMachine(RuleBasedStateMachine):
    """Shoppers, three gateways, a lossy network and an operator, against the real app."""

    def __init__(self, shop):
        super().__init__()
        self.shop, self.app, self.faults = shop, shop.app, shop.faults
        self.world = shop.reset(shoppers=2)
        self.gateway_client = self.app.test_client()  # a gateway carries no shopper's cookie
        self.runner = self.app.test_cli_runner()
        self.shoppers = [self._sign_in(i) for i in range(2)]
        self.checkouts: list[Checkout] = []
        self.told: set[tuple[str, str]] = set()  # payments a return/callback/reconcile settled
        self.crashed: set[str] = set()           # events stored, then their handler crashed
        self.pages_seen: dict[str, tuple] = {}   # reference -> (order status, money held) last checked
        # Last: teardown stops the clock, and Hypothesis only tears down a machine it got.
        self.clock = time_machine.travel(utcnow(), tick=True)
        self.traveller = self.clock.start()

    def teardown(self):
        self.clock.stop()

    def _sign_in(self, index) -> Shopper:
        client = self.app.test_client()
        email = f"shopper{index}@example.com"
        assert AuthActions(client).login(email=email, password=PASSWORD).status_code == 302
        with self._rows() as rows:
            return Shopper(index, client, rows.scalar(sa.select(User.id).where(User.email == email)))

    # --- helpers ------------------------------------------------------------------
    def _alive(self) -> list[Shopper]:
        return [s for s in self.shoppers if s.alive]

    def _able(self, action) -> list[Checkout]:
        return [c for c in self.checkouts if self.world.side(c.gateway).can(action, c)]

    @contextmanager
    def _rows(self):
        """The database as it is now (an app context of our own, never shared with a request)."""
        with self.app.app_context():
            yield db.session

    def _order(self, checkout) -> Order:
        with self._rows() as rows:
            return rows.scalars(sa.select(Order).where(Order.reference == checkout.reference)).one()

    def _live(self, user_id) -> Subscription | None:
        with self._rows() as rows:
            return rows.scalars(sa.select(Subscription).where(
                Subscription.user_id == user_id, Subscription.status.in_(LIVE_STATUSES))).first()

    def _cli(self, *args):
        result = self.runner.invoke(args=list(args))
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            f"flask {' '.join(args)} crashed:\n{result.output}"
        return result

    def _heard(self) -> set[tuple[str, str]]:
        """Payments the shop has been told of: returns, reconcile, and finished webhooks."""
        with self._rows() as rows:
            finished = set(rows.scalars(sa.select(WebhookEvent.event_id).where(
                WebhookEvent.status.in_(("processed", "ignored")))))
        return self.told | {s for d in self.world.network if d.event_id in finished
                            for s in d.settles}

    # --- shoppers -----------------------------------------------------------------
    @precondition(lambda self: self._alive())
    @rule(shopper=PICK, gateway=st.sampled_from(GATEWAYS), plan=st.sampled_from(PLANS))
    def a_shopper_starts_a_checkout(self, shopper, gateway, plan):
        who = pick(self._alive(), shopper)
        subscribed = self._live(who.user_id) is not None
        response, checkout = self.world.side(gateway).start(who.client, who.user_id, plan)
        if subscribed and plan in RECURRING:
            assert response.status_code == 409 and error_code(response.text) == "ALREADY_SUBSCRIBED", \
                (response.status_code, response.text[:500])
            return
        assert checkout is not None, (response.status_code, response.text[:800])
        checkout.shopper = who.index
        self.checkouts.append(checkout)

    @precondition(lambda self: self._able("pay"))
    @rule(checkout=PICK)
    def the_gateway_takes_the_payment(self, checkout):
        chosen = pick(self._able("pay"), checkout)
        self.world.side(chosen.gateway).pay(self.shoppers[chosen.shopper].client, chosen)

    @precondition(lambda self: self._able("decline"))
    @rule(checkout=PICK)
    def the_gateway_declines(self, checkout):
        chosen = pick(self._able("decline"), checkout)
        self.world.side(chosen.gateway).decline(self.shoppers[chosen.shopper].client, chosen)

    @precondition(lambda self: self._able("authorise_late"))
    @rule(checkout=PICK)
    def the_gateway_authorises_late(self, checkout):
        chosen = pick(self._able("authorise_late"), checkout)
        self.world.side(chosen.gateway).authorise_late(self.shoppers[chosen.shopper].client, chosen)

    @precondition(lambda self: self._able("time_out"))
    @rule(checkout=PICK)
    def the_gateway_times_out(self, checkout):
        chosen = pick(self._able("time_out"), checkout)
        self.world.side(chosen.gateway).time_out(self.shoppers[chosen.shopper].client, chosen)

    def _returnable(self) -> list[Checkout]:
        return [c for c in self.checkouts if c.returns and self.shoppers[c.shopper].alive]

    @precondition(lambda self: self._returnable())
    @rule(checkout=PICK)
    def the_shoppers_browser_comes_back(self, checkout):
        """The success redirect or the checkout callback: never, once or twice, at any time."""
        chosen = pick(self._returnable(), checkout)
        client = self.shoppers[chosen.shopper].client
        method, path, data = chosen.returns[-1]
        response = (client.get(path, follow_redirects=True) if method == "GET"
                    else client.post(path, data=data, follow_redirects=True))
        if chosen.payment_id and (chosen.gateway, chosen.payment_id) in self.world.paid():
            self.told.add((chosen.gateway, chosen.payment_id))
        self._assert_success_page(chosen, response)

    # --- the network -----------------------------------------------------------------
    @precondition(lambda self: self.world.network)
    @rule(copy=PICK, crash=SOMETIMES)
    def a_webhook_copy_arrives(self, copy, crash):
        """Any copy of any event, in any order, as often as the dice say; sometimes the
        shop dies between storing it and processing it."""
        delivery = pick(self.world.network, copy)
        if crash:
            self.faults.crash_once.add(delivery.event_id)
        response = self.world.deliver(self.gateway_client, delivery)
        assert response.status_code == 200, (delivery, response.status_code, response.text)
        if delivery.event_id in self.faults.crash_once:
            self.faults.crash_once.discard(delivery.event_id)  # a duplicate: never processed
        elif crash:
            self.crashed.add(delivery.event_id)

    # --- the gateways bill, refund and are disputed ---------------------------------
    def _billing(self) -> list[tuple[str, str]]:
        return [(g, sid) for g in ("stripe", "razorpay") for sid in self.world.side(g).billing()]

    @precondition(lambda self: self._billing())
    @rule(subscription=PICK)
    def the_gateway_renews_a_subscription(self, subscription):
        gateway, sub_id = pick(self._billing(), subscription)
        self.world.side(gateway).renew(sub_id)

    @precondition(lambda self: self._billing())
    @rule(subscription=PICK)
    def a_renewal_payment_fails(self, subscription):
        gateway, sub_id = pick(self._billing(), subscription)
        self.world.side(gateway).fail_renewal(sub_id)

    def _refundable_orders(self) -> list[tuple[str, str, str, int]]:
        with self._rows() as rows:
            return rows.execute(sa.select(
                Order.reference, Order.gateway, Order.gateway_payment_id,
                Order.amount_minor - Order.refunded_minor).where(
                Order.status.in_(("paid", "partially_refunded")),
                Order.gateway_payment_id.is_not(None)).order_by(Order.id)).all()

    @precondition(lambda self: self._refundable_orders())
    @rule(order=PICK, partial=st.booleans())
    def the_operator_refunds_an_order(self, order, partial):
        reference, gateway, payment_id, left = pick(self._refundable_orders(), order)
        partial = partial and left > PARTIAL_REFUND_MINOR
        amount = PARTIAL_REFUND_MINOR if partial else left  # full: the command's default
        result = self._cli("orders", "refund", reference,
                           *(["--amount", str(amount)] if partial else []))
        if gateway != "razorpay" and PENDING["13.4 stripe and test gateway refunds"]:
            assert result.exit_code == 1, result.output  # refused: cannot refund from Tiffin yet
            return
        assert result.exit_code == 0, result.output
        self.world.side(gateway).refunded_by_the_shop(payment_id, amount)

    def _refundable_at_gateway(self) -> list[tuple[str, str]]:
        return [(g, pid) for (g, pid), refunded in self.world.paid().items()
                if g != "test" and refunded < self.world.full_amount(g, pid)]

    @precondition(lambda self: self._refundable_at_gateway())
    @rule(payment=PICK, partial=st.booleans())
    def the_gateway_refunds_from_its_dashboard(self, payment, partial):
        gateway, pid = pick(self._refundable_at_gateway(), payment)
        left = self.world.full_amount(gateway, pid) - self.world.paid()[(gateway, pid)]
        self.world.side(gateway).refund_at_gateway(
            pid, min(PARTIAL_REFUND_MINOR, left) if partial else left)

    @precondition(lambda self: [k for k in self.world.paid() if k[0] != "test"])
    @rule(payment=PICK)
    def the_customer_disputes_a_payment(self, payment):
        gateway, pid = pick([k for k in self.world.paid() if k[0] != "test"], payment)
        self.world.side(gateway).dispute(pid)

    # --- the shopper's account ------------------------------------------------------
    def _account_action(self, shopper, path, data=None):
        who = pick(self._alive(), shopper)
        live = self._live(who.user_id)
        remote = (live.gateway, live.gateway_subscription_id) if live is not None else None
        response = who.client.post(path, data=data or {})
        return who, live, remote, response

    def _gateway_tells(self, remote):
        if remote and remote[0] != "test" and remote[1]:
            self.world.side(remote[0]).subscription_changed(remote[1])

    @precondition(lambda self: self._alive())
    @rule(shopper=PICK)
    def the_shopper_cancels_their_plan(self, shopper):
        _, live, remote, r = self._account_action(shopper, "/account/subscription/cancel")
        self._assert_account_action(live, r)
        self._gateway_tells(remote)

    @precondition(lambda self: self._alive())
    @rule(shopper=PICK)
    def the_shopper_resumes_their_plan(self, shopper):
        _, live, remote, r = self._account_action(shopper, "/account/subscription/resume")
        if live is not None and live.gateway == "razorpay" and live.cancel_at_period_end:
            assert r.status_code == 409 and error_code(r.text) == "SUBSCRIPTION_CHANGE_UNSUPPORTED"
            return
        self._assert_account_action(live, r)
        self._gateway_tells(remote)

    @precondition(lambda self: self._alive())
    @rule(shopper=PICK, plan=st.sampled_from(RECURRING))
    def the_shopper_changes_plan(self, shopper, plan):
        """As previewed; on the test gateway a dearer plan is paid for first on its page."""
        who, live, remote, r = self._account_action(shopper, "/account/subscription/change",
                                                    {"plan": plan})
        self._assert_account_action(live, r)
        if r.status_code == 303 and r.location.startswith("/test-gateway/pay/"):
            checkout = self.world.side("test").checkout_from(r, who.user_id, plan)
            checkout.shopper = who.index
            self.checkouts.append(checkout)
        self._gateway_tells(remote)

    @precondition(lambda self: self._alive())
    @rule(shopper=PICK)
    def the_shopper_deletes_their_account(self, shopper):
        who, _, remote, r = self._account_action(shopper, "/account/delete",
                                                 {"password": PASSWORD, "confirm": "y"})
        assert r.status_code == 303, (r.status_code, r.text[:800])
        who.alive = False
        self._gateway_tells(remote)

    # --- the operator ----------------------------------------------------------------
    @rule()
    def the_operator_repairs_subscriptions(self):
        result = self._cli("fix", "subscriptions", "--fix")
        assert result.exit_code == 0, result.output

    @rule()
    def the_operator_syncs_statuses(self):
        result = self._cli("fix", "sync-status", "--fix")
        assert result.exit_code == 0, result.output

    @rule()
    def the_operator_reconciles(self):
        paid = self.world.paid()
        result = self._cli("reconcile", "--fix", "--since", "30d")
        razorpay_plans = any(c.gateway == "razorpay" and c.recurring and c.state == PAID
                             for c in self.checkouts)
        if PENDING["13.3 razorpay reconcile matches subscriptions"] and razorpay_plans:
            return  # exit 2 "names no user/plan": Razorpay subscription charges are not matched yet
        assert result.exit_code in (0, 1), result.output
        self.told |= {k for k in paid if k[0] != "test" and self._reconcilable(k)}

    def _reconcilable(self, payment) -> bool:
        """Reconcile lists Stripe's Checkout Sessions (not renewal invoices) and every
        Razorpay payment."""
        gateway, pid = payment
        if gateway == "stripe":
            return any(c.payment_id == pid for c in self.checkouts)
        return True

    @rule()
    def an_hour_passes_and_the_operator_retries_webhooks(self):
        self.traveller.shift(timedelta(hours=1))
        result = self._cli("webhooks", "retry")
        self.crashed.clear()  # the fault was one crash: every retried event must now finish
        with self._rows() as rows:
            still_failing = rows.scalars(sa.select(WebhookEvent).where(
                WebhookEvent.status.in_(("failed", "dead")))).all()
        for event in still_failing:
            assert EARLY_RENEWAL in (event.last_error or ""), (event, event.last_error)
        assert result.exit_code == (1 if still_failing else 0), result.output

    @precondition(lambda self: [c for c in self.checkouts if c.state != PAID
                                and self.shoppers[c.shopper].alive])
    @rule(checkout=PICK)
    def the_shopper_leaves_through_the_cancel_link(self, checkout):
        chosen = pick([c for c in self.checkouts if c.state != PAID
                       and self.shoppers[c.shopper].alive], checkout)
        r = self.shoppers[chosen.shopper].client.get(f"/checkout/cancel/{chosen.reference}",
                                                     follow_redirects=True)
        if "Checkout cancelled" in r.text:  # "you have not been charged"
            lenient = PENDING["truthpages: the cancel page leaves a paid order alone"]
            assert r.status_code == 200 and (lenient or not self._held(chosen)), chosen
        else:  # a paid or paying order is left alone: its success page says where it stands
            self._assert_success_page(chosen, r)

    # --- what the shopper is shown ----------------------------------------------------
    def _assert_account_action(self, live, response):
        if live is None:
            assert response.status_code == 404 and error_code(response.text) == "ORDER_NOT_FOUND", \
                (response.status_code, response.text[:500])
        else:
            assert response.status_code == 303, (response.status_code, response.text[:800])

    # What the success page may say of an order the shop does not count as paid.
    UNPAID_PAGES = {
        # Paid, processing, or not heard of yet; or the gateway's page still waits for the
        # shopper (PAYMENT_AWAITING_SHOPPER, once the pending page asks the gateway).
        "pending": {"PAYMENT_PENDING_CONFIRMATION", "PAYMENT_AWAITING_SHOPPER"},
        "failed": {"PAYMENT_DECLINED"},
        # Left, or the bank said no; or left/expired while an async payment is still
        # processing at the gateway, which the page truthfully calls "being confirmed".
        "canceled": {"PAYMENT_NOT_COMPLETED", "PAYMENT_DECLINED", "PAYMENT_PENDING_CONFIRMATION"},
    }
    # Charged, then refunded or disputed: the shopper is shown the order as it stands.
    CHARGED_BACK = ("refunded", "disputed")

    def _held(self, checkout) -> bool:
        """Whether the gateway holds money for this checkout."""
        return bool(checkout.payment_id) and \
            (checkout.gateway, checkout.payment_id) in self.world.paid()

    def _assert_success_page(self, checkout, response):
        """The success page (or the return that ends on it) says what the gateway says:
        confirmed exactly when the shop counts the order paid and the gateway holds the money."""
        order = self._order(checkout)
        code = error_code(response.text)
        held = self._held(checkout)
        seen = (checkout, order.status, response.status_code, code)
        if order.status in ("paid", "partially_refunded"):
            assert held, seen  # never "paid" for money the gateway does not hold
            assert response.status_code == 200 and "your payment is confirmed" in response.text, seen
            return
        if order.status in self.CHARGED_BACK:
            assert "not been charged" not in response.text, seen
            if response.status_code == 303:
                assert f"/account/orders/{checkout.reference}" in response.location, seen
            else:
                assert response.status_code == 200 and order.status in response.text, seen
            return
        assert code in self.UNPAID_PAGES.get(order.status, ()), seen
        expected_status = 202 if code == "PAYMENT_PENDING_CONFIRMATION" else 402
        assert response.status_code == expected_status, seen

    # --- invariants -------------------------------------------------------------------
    @invariant()
    def every_payment_the_gateway_holds_has_one_paid_order_and_one_grant(self):
        paid, heard = self.world.paid(), self._heard()
        with self._rows() as rows:
            settled = rows.scalars(sa.select(Order).where(Order.status.in_(SETTLED))).all()
            # A plan-change difference paid after the plan moved on is kept for a refund.
            held_for_refund = set(rows.execute(sa.select(Order.gateway, Order.gateway_payment_id)
                                               .where(Order.status == "needs_review",
                                                      Order.failure_code == OUTDATED_CHANGE)))
            grants = dict(rows.execute(sa.select(CreditLedgerEntry.source_key, sa.func.count())
                                       .group_by(CreditLedgerEntry.source_key)).all())
        by_payment: dict = {}
        for order in settled:
            by_payment.setdefault((order.gateway, order.gateway_payment_id), []).append(order)
        for payment, orders in by_payment.items():
            assert len(orders) == 1, f"payment {payment} paid {orders}"
            assert payment in paid, f"{orders[0]} is settled but the gateway holds no payment"
        for payment, refunded in paid.items():
            # A payment refunded in full before the shop heard of it may stay unrecorded.
            if payment in heard and refunded < self.world.full_amount(*payment) \
                    and payment not in held_for_refund:
                orders = by_payment.get(payment, [])
                assert len(orders) == 1, f"the shop heard of {payment} but holds {orders}"
        for order in settled:
            assert grants.get(f"order:{order.id}") == 1, f"{order} has no single credit grant"
            refunded_there = paid[(order.gateway, order.gateway_payment_id)]
            assert order.refunded_minor <= refunded_there, (order, refunded_there)

    @invariant()
    def one_live_subscription_per_user_carrying_its_gateway_id(self):
        with self._rows() as rows:
            live = rows.scalars(sa.select(Subscription).where(
                Subscription.status.in_(LIVE_STATUSES))).all()
        users = [s.user_id for s in live]
        assert len(users) == len(set(users)), live
        for subscription in live:
            if subscription.gateway != "test":
                assert subscription.gateway_subscription_id, subscription

    @invariant()
    def credits_equal_the_ledger_and_are_never_negative(self):
        with self._rows() as rows:
            ledger = {(u, b): n for u, b, n in rows.execute(sa.select(
                CreditLedgerEntry.user_id, CreditLedgerEntry.bucket,
                sa.func.sum(CreditLedgerEntry.delta)).group_by(
                CreditLedgerEntry.user_id, CreditLedgerEntry.bucket)).all()}
            users = rows.execute(sa.select(User.id, User.plan_meal_credits,
                                           User.addon_meal_credits)).all()
        for user_id, plan_credits, addon_credits in users:
            for bucket, balance in (("plan", plan_credits), ("addon", addon_credits)):
                total = ledger.get((user_id, bucket), 0)
                assert balance == total and balance >= 0, (user_id, bucket, balance, total)

    @invariant()
    def every_stored_event_is_finished_unless_it_crashed(self):
        with self._rows() as rows:
            unfinished = rows.scalars(sa.select(WebhookEvent).where(
                WebhookEvent.status.not_in(("processed", "ignored")))).all()
        for event in unfinished:
            if event.status == "failed" and event.event_id in self.crashed:
                continue
            assert event.status in ("failed", "dead") and EARLY_RENEWAL in (event.last_error or ""), \
                (event, event.last_error)

    @invariant()
    def the_order_and_success_pages_say_what_the_gateway_says(self):
        """Each order's pages, whenever its status or the gateway's money for it changed."""
        paid = self.world.paid()
        with self._rows() as rows:
            statuses = dict(rows.execute(sa.select(Order.reference, Order.status)).all())
        for checkout in self.checkouts:
            shopper = self.shoppers[checkout.shopper]
            now = (statuses[checkout.reference], paid.get((checkout.gateway, checkout.payment_id)))
            if not shopper.alive or self.pages_seen.get(checkout.reference) == now:
                continue
            self.pages_seen[checkout.reference] = now
            page = shopper.client.get(f"/account/orders/{checkout.reference}")
            order = self._order(checkout)
            assert page.status_code == 200 and f"badge-{order.status}" in page.text, \
                (checkout, page.status_code)
            self._assert_success_page(checkout, shopper.client.get(
                f"/checkout/success/{checkout.reference}"))


class Replay:
    """A PaymentMachine driven by hand, checking every invariant after each step as
    Hypothesis does: a shrunk failure's printed calls, pasted, become a regression test."""

    def __init__(self, shop):
        self.machine = PaymentMachine(shop)
        self.invariants = [getattr(self.machine, name) for name, member in
                           vars(PaymentMachine).items() if hasattr(member, INVARIANT_MARKER)]
        self.check()

    def check(self):
        for check in self.invariants:
            check()

    def __getattr__(self, name):
        step = getattr(self.machine, name)

        def checked(**kwargs):
            step(**kwargs)
            self.check()
        return checked

    def teardown(self):
        self.machine.teardown()

