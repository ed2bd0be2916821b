"""`flask orders refund` for Stripe orders, and the `charge.refunded` webhook that follows."""
import json

import sqlalchemy as sa

from app.extensions import db
from app.models import CreditLedgerEntry, NotificationOutbox, Order, Subscription
from tests.conftest import count, user
from tests.stripe.helpers import deliver, paid_session, point_stripe_at, reload, subscribe


def _refund_calls(fake):
    return [(params, headers) for m, path, params, headers in fake.requests
            if m == "POST" and path == "/v1/refunds"]


def _paid_pack(client, fake):
    order, session = paid_session(client, fake, "meal-pack-5")
    r, _ = deliver(client, fake, "checkout.session.completed", session)
    assert r.status_code == 200 and reload(order).status == "paid"
    return reload(order), session


def _plan_payment_intent(fake, order):
    return next(p["payment"]["payment_intent"] for p in fake.invoice_payments
                if p["invoice"] == order.gateway_payment_id)


def test_full_refund_of_a_plan_revokes_access_and_the_later_webhook_changes_nothing(
        client, auth, runner, fake_stripe):
    auth.register()
    order, _, _ = subscribe(client, fake_stripe)
    payment_intent = _plan_payment_intent(fake_stripe, reload(order))

    result = runner.invoke(args=["orders", "refund", order.reference])

    assert result.exit_code == 0, result.output
    assert "processed" in result.output and "refunded" in result.output
    [(params, headers)] = _refund_calls(fake_stripe)
    assert params["payment_intent"] == payment_intent and params["amount"] == "299900"
    assert order.reference in headers["Idempotency-Key"]
    order = reload(order)
    assert order.status == "refunded" and order.refunded_minor == 299900
    assert db.session.scalars(sa.select(Subscription)).one().status == "revoked"
    assert user().plan_meal_credits == 0
    ledger_rows = count(CreditLedgerEntry)

    r, _ = deliver(client, fake_stripe, "charge.refunded",
                   fake_stripe.refunded_charge(payment_intent))

    assert r.status_code == 200 and r.json["status"] == "processed"
    order = reload(order)
    assert order.status == "refunded" and order.refunded_minor == 299900
    assert count(CreditLedgerEntry) == ledger_rows  # no second clawback
    assert count(NotificationOutbox, NotificationOutbox.kind == "refund") == 1


def test_partial_refund_keeps_access_and_its_webhook_changes_nothing(client, auth, runner,
                                                                     fake_stripe):
    auth.register()
    order, session = _paid_pack(client, fake_stripe)

    result = runner.invoke(args=["orders", "refund", order.reference, "--amount", "20000"])
    r, _ = deliver(client, fake_stripe, "charge.refunded",
                   fake_stripe.refunded_charge(session["payment_intent"]))

    assert result.exit_code == 0, result.output
    assert r.status_code == 200
    order = reload(order)
    assert order.status == "partially_refunded" and order.refunded_minor == 20000
    assert user().addon_meal_credits == 5
    assert count(NotificationOutbox, NotificationOutbox.kind == "refund") == 1
    assert fake_stripe.payments[session["payment_intent"]]["refunded"] == 20000


def test_a_repeated_command_before_the_refund_lands_refunds_once(client, auth, runner,
                                                                 fake_stripe):
    auth.register()
    order, session = _paid_pack(client, fake_stripe)
    fake_stripe.refund_status = "pending"

    first = runner.invoke(args=["orders", "refund", order.reference, "--amount", "30000"])
    again = runner.invoke(args=["orders", "refund", order.reference, "--amount", "30000"])

    assert first.exit_code == 0 and "pending" in first.output
    assert again.exit_code == 0 and "pending" in again.output
    calls = _refund_calls(fake_stripe)
    assert len(calls) == 2 and calls[0][1]["Idempotency-Key"] == calls[1][1]["Idempotency-Key"]
    assert len(fake_stripe.refunds) == 1 and reload(order).status == "paid"

    fake_stripe.settle_refund(next(iter(fake_stripe.refunds)))
    r, _ = deliver(client, fake_stripe, "charge.refunded",
                   fake_stripe.refunded_charge(session["payment_intent"]))

    assert r.status_code == 200
    order = reload(order)
    assert order.status == "partially_refunded" and order.refunded_minor == 30000


def test_a_repeated_full_refund_refunds_once_and_exits_1(client, auth, runner, fake_stripe):
    auth.register()
    order, session = _paid_pack(client, fake_stripe)

    first = runner.invoke(args=["orders", "refund", order.reference])
    again = runner.invoke(args=["orders", "refund", order.reference])

    assert first.exit_code == 0 and again.exit_code == 1
    assert "refunded" in again.output
    assert len(fake_stripe.refunds) == 1
    assert fake_stripe.payments[session["payment_intent"]]["refunded"] == 79900
    assert reload(order).refunded_minor == 79900


def test_refund_json_output(client, auth, runner, fake_stripe):
    auth.register()
    order, _ = _paid_pack(client, fake_stripe)

    result = runner.invoke(args=["orders", "refund", order.reference, "--amount", "100", "--json"])
    refused = runner.invoke(args=["orders", "refund", order.reference, "--amount", "999999",
                                  "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["reference"] == order.reference and data["amount_minor"] == 100
    assert data["gateway_status"] == "processed" and data["order_status"] == "partially_refunded"
    assert data["refund_id"].startswith("re_") and data["gateway"] == "stripe"
    assert refused.exit_code == 1 and json.loads(refused.output)["refunded"] is False


def test_refund_refuses_too_much_and_unpaid_orders_without_calling_stripe(client, auth, runner,
                                                                         fake_stripe):
    auth.register()
    order, _ = _paid_pack(client, fake_stripe)
    pending, _ = paid_session(client, fake_stripe, "meal-pack-5")

    too_much = runner.invoke(args=["orders", "refund", order.reference, "--amount", "79901"])
    unpaid = runner.invoke(args=["orders", "refund", pending.reference])

    assert too_much.exit_code == 1 and "1..79900" in too_much.output
    assert unpaid.exit_code == 1 and "pending" in unpaid.output
    assert _refund_calls(fake_stripe) == []


def test_stripe_down_exits_1_and_changes_nothing(app, client, auth, runner, fake_stripe):
    auth.register()
    order, _ = _paid_pack(client, fake_stripe)
    point_stripe_at(app)

    result = runner.invoke(args=["orders", "refund", order.reference])

    assert result.exit_code == 1 and "GATEWAY_UNAVAILABLE" in result.output
    assert reload(order).status == "paid" and reload(order).refunded_minor == 0


def test_refund_recorded_by_a_fast_webhook_is_not_counted_twice(client, auth, runner, app,
                                                               fake_stripe):
    """The charge.refunded webhook lands while the command waits on Stripe."""
    auth.register()
    order, session = _paid_pack(client, fake_stripe)
    original = fake_stripe.create_refund

    def refund_then_webhook(params):
        response = original(params)
        deliver(app.test_client(), fake_stripe, "charge.refunded",
                fake_stripe.refunded_charge(session["payment_intent"]))
        return response

    fake_stripe.create_refund = refund_then_webhook
    result = runner.invoke(args=["orders", "refund", order.reference, "--amount", "10000"])

    assert result.exit_code == 0, result.output
    order = db.session.get(Order, order.id, populate_existing=True)
    assert order.refunded_minor == 10000 and order.status == "partially_refunded"
