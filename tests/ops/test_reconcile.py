"""Reconcile: the missed-webhook backstop, driven against a local list API over HTTP.

The test gateway has no remote state of its own, so here it is given one: a
subclass whose `list_recent_payments` asks a local HTTP server shaped like a
gateway's list API (registered in GATEWAY_CLASSES for the test). The Stripe
adapter against the Stripe fake is in test_reconcile_stripe.py.
"""
import json
from datetime import datetime, timezone

import pytest
import requests
import sqlalchemy as sa
from werkzeug import Response

from app.extensions import db
from app.gateways import GATEWAY_CLASSES, get_gateway
from app.gateways.base import DECLINED, PaymentResult
from app.gateways.test import TestGateway as _TestGateway
from app.models import AuditLogEntry, CreditLedgerEntry, NotificationOutbox, Order, Subscription
from tests.conftest import count
from tests.ops.conftest import found_checks, monitor_json, pending_order


class ListedTestGateway(_TestGateway):
    """The test gateway with a remote list API (GET {TEST_GATEWAY_LIST_URL}?created_gte=…)."""

    def list_recent_payments(self, since):
        response = requests.get(self.config["TEST_GATEWAY_LIST_URL"],
                                params={"created_gte": int(since.timestamp())}, timeout=5)
        response.raise_for_status()
        return [PaymentResult(status=p["status"], gateway_order_id=p["order_id"],
                              gateway_payment_id=p.get("payment_id"),
                              amount_minor=p["amount_minor"], currency=p["currency"],
                              metadata_user_id=p["metadata"].get("user_id"),
                              metadata_plan_id=p["metadata"].get("plan_id"),
                              order_reference=p.get("reference"),
                              refunded_minor=p.get("refunded_minor", 0),
                              created_at=datetime.fromtimestamp(p["created"], timezone.utc))
                for p in response.json()["data"]]


@pytest.fixture
def remote(app, httpserver, monkeypatch):
    """The remote payments list; a test appends to it."""
    payments = []
    monkeypatch.setitem(GATEWAY_CLASSES, "test", ListedTestGateway)
    app.config["TEST_GATEWAY_LIST_URL"] = httpserver.url_for("/v1/payments")
    httpserver.expect_request("/v1/payments").respond_with_handler(
        lambda request: Response(json.dumps({"object": "list", "data": payments}),
                                 content_type="application/json"))
    return payments


def _remote_payment(order: Order, status="paid", **extra) -> dict:
    return {"order_id": order.gateway_order_id, "payment_id": "tgp_remote_1", "status": status,
            "amount_minor": order.amount_minor, "currency": order.currency,
            "reference": order.reference, "created": int(datetime.now(timezone.utc).timestamp()),
            "metadata": {"user_id": order.user_id, "plan_id": order.meal_plan_id}, **extra}


def _deliver_webhook(client, order: Order):
    gw = get_gateway("test")
    body = gw.build_event({"order_id": order.gateway_order_id, "reference": order.reference,
                           "amount_minor": order.amount_minor, "currency": order.currency,
                           "user_id": order.user_id, "plan_id": order.meal_plan_id},
                          "payment.succeeded", payment_id="tgp_remote_1")
    return client.post("/webhooks/test", data=body, headers={
        "Content-Type": "application/json", "X-Test-Gateway-Signature": gw.sign_body(body)})


def test_reconcile_fulfils_a_missed_webhook_exactly_once(shop, runner, client, remote):
    order = pending_order(shop["asha_user"], "meal-pack-5")  # paid remotely; webhook lost
    remote.append(_remote_payment(order))

    report = runner.invoke(args=["reconcile", "--since", "24h"])
    assert report.exit_code == 2 and "paid_not_recorded" in report.stdout
    assert db.session.get(Order, order.id).status == "pending"  # without --fix nothing changes

    fixed = runner.invoke(args=["reconcile", "--since", "24h", "--fix"])
    assert fixed.exit_code == 0, fixed.output
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "paid"
    grants = count(CreditLedgerEntry, CreditLedgerEntry.order_id == order.id)
    assert grants == 1
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled",
                 AuditLogEntry.actor == "cli:reconcile") == 1

    again = runner.invoke(args=["reconcile", "--since", "24h", "--fix", "--json"])
    assert again.exit_code == 0 and '"discrepancies": []' in again.stdout

    hook = _deliver_webhook(client, db.session.get(Order, order.id))  # the webhook comes after all
    assert hook.status_code == 200
    db.session.expire_all()
    assert count(CreditLedgerEntry, CreditLedgerEntry.order_id == order.id) == 1
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled",
                 AuditLogEntry.order_id == order.id) == 1
    assert count(NotificationOutbox, NotificationOutbox.dedupe_key == f"payment_confirmed:{order.id}") == 1
    assert found_checks(monitor_json(runner)[1]) == {}


def test_reconcile_holds_a_payment_for_an_order_we_never_stored(shop, runner, remote):
    """Metadata naming a shopper proves no purchase here: held for review, nothing granted,
    critical until an operator refunds or grants it (issue 13, part 9)."""
    order = pending_order(shop["asha_user"], "meal-pack-5")
    credits_before = shop["asha_user"].addon_meal_credits
    payment = _remote_payment(order)
    payment["order_id"], payment["reference"] = "tgo_never_stored", None
    remote.append(payment)

    for _ in range(2):  # a second run grants nothing either
        fixed = runner.invoke(args=["reconcile", "--fix", "--json"])
        assert fixed.exit_code == 2, fixed.output
        assert "PAYMENT_UNMATCHED" in fixed.output
    held = db.session.scalars(sa.select(Order).where(
        Order.gateway_order_id == "tgo_never_stored")).one()
    assert held.status == "needs_review" and held.failure_code == "PAYMENT_UNMATCHED"
    db.session.refresh(shop["asha_user"])
    assert shop["asha_user"].addon_meal_credits == credits_before
    assert count(CreditLedgerEntry, CreditLedgerEntry.order_id == held.id) == 0
    assert "payment_unmatched" in found_checks(monitor_json(runner)[1])

    granted = runner.invoke(args=["orders", "grant", held.reference])
    assert granted.exit_code == 0, granted.output
    db.session.expire_all()
    assert db.session.get(Order, held.id).status == "paid"


def test_reconcile_subscription_payment_creates_the_subscription(app, runner, remote):
    from tests.ops.conftest import make_user

    dana = make_user("dana@example.com")
    order = pending_order(dana, "lunch-monthly")
    remote.append(_remote_payment(order))
    assert runner.invoke(args=["reconcile", "--fix"]).exit_code == 0
    assert count(Subscription, Subscription.order_id == order.id, Subscription.status == "active") == 1


def test_reconcile_reports_refunded_and_unpaid_there(shop, runner, remote):
    remote.append(_remote_payment(shop["asha"], refunded_minor=shop["asha"].amount_minor))
    remote.append(_remote_payment(shop["ben"], status=DECLINED))
    result = runner.invoke(args=["reconcile", "--fix", "--json"])
    assert result.exit_code == 1
    kinds = sorted(d["kind"] for d in json.loads(result.stdout)["discrepancies"])
    assert kinds == ["refunded_there", "unpaid_there"]
    db.session.expire_all()
    assert db.session.get(Order, shop["asha"].id).status == "paid"  # reported, not changed


def test_reconcile_refuses_a_wrong_amount(shop, runner, remote):
    order = pending_order(shop["asha_user"], "meal-pack-5")
    remote.append(_remote_payment(order, amount_minor=1))
    result = runner.invoke(args=["reconcile", "--fix"])
    assert result.exit_code == 2 and "PAYMENT_AMOUNT_MISMATCH" in result.stdout
    assert db.session.get(Order, order.id).status == "needs_review"


def test_unreachable_gateway_fails_the_run(shop, runner, remote, app):
    app.config["TEST_GATEWAY_LIST_URL"] = "http://127.0.0.1:9/v1/payments"
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 2 and "could not list payments" in result.stderr
