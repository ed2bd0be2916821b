"""A payment we cannot tie to an order never extends access silently (test gateway).

It is stored (the event, and a needs_review order holding the payment), the
monitor reports it as critical, and nothing is granted until an operator refunds
it (`flask orders refund`) or grants it (`flask orders grant`).
"""
import json

import sqlalchemy as sa

from app.extensions import db
from app.gateways import get_gateway
from app.models import (AuditLogEntry, CreditLedgerEntry, NotificationOutbox, Order, Subscription,
                        WebhookEvent)
from tests.conftest import count, plan, user
from tests.flows import gateway_page, pay


def _signed_post(client, body: bytes):
    return client.post("/webhooks/test", data=body, headers={
        "Content-Type": "application/json",
        "X-Test-Gateway-Signature": get_gateway("test").sign_body(body)})


def _stray_payment(user_id, plan_id, *, order_id="tgo_not_ours", payment_id="tgp_stray",
                   amount=299900):
    session = {"order_id": order_id, "reference": "TF-000000000000", "amount_minor": amount,
               "currency": "INR", "user_id": user_id, "plan_id": plan_id}
    return get_gateway("test").build_event(session, "payment.succeeded", payment_id=payment_id)


def _subscribed(client, auth):
    auth.register()
    page = pay(client)
    assert "your payment is confirmed" in page.text
    return db.session.scalars(sa.select(Subscription)).one()


def _snapshot(sub):
    db.session.expire_all()
    sub = db.session.get(Subscription, sub.id)
    return (sub.current_period_end, sub.status, user().plan_meal_credits,
            user().addon_meal_credits, count(CreditLedgerEntry), count(NotificationOutbox))


def test_signed_payment_for_an_order_we_do_not_hold_grants_nothing_and_is_held(client, auth):
    sub = _subscribed(client, auth)
    before = _snapshot(sub)

    r = _signed_post(client, _stray_payment(user().id, plan("lunch-monthly").id))

    assert r.status_code == 200 and r.json["status"] == "processed"
    assert _snapshot(sub) == before  # no period change, no credits, no email
    held = db.session.scalars(sa.select(Order).where(Order.gateway_order_id == "tgo_not_ours")
                              ).one()
    assert held.status == "needs_review" and held.failure_code == "PAYMENT_UNMATCHED"
    assert held.gateway_payment_id == "tgp_stray" and held.amount_minor == 299900
    assert held.user_id == user().id and held.paid_at is None
    event = db.session.scalars(sa.select(WebhookEvent).where(
        WebhookEvent.event_type == "payment.succeeded", WebhookEvent.payload["data"]["order_id"]
        .as_string() == "tgo_not_ours")).one()
    assert event.status == "processed"
    assert count(AuditLogEntry, AuditLogEntry.action == "payment_unmatched") == 1


def test_redelivered_and_resent_stray_payment_stays_one_held_order(client, auth):
    sub = _subscribed(client, auth)
    before = _snapshot(sub)
    body = _stray_payment(user().id, plan("lunch-monthly").id)
    resent = _stray_payment(user().id, plan("lunch-monthly").id)  # a new event id, same payment

    responses = [_signed_post(client, b) for b in (body, body, resent)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert count(Order, Order.failure_code == "PAYMENT_UNMATCHED") == 1
    assert _snapshot(sub) == before


def test_monitor_reports_the_held_payment_as_critical_with_what_to_do(client, auth, runner):
    _subscribed(client, auth)
    _signed_post(client, _stray_payment(user().id, plan("lunch-monthly").id))
    held = db.session.scalars(sa.select(Order).where(Order.failure_code == "PAYMENT_UNMATCHED")
                              ).one()

    table = runner.invoke(args=["monitor", "check"])
    as_json = runner.invoke(args=["monitor", "check", "--json"])

    assert table.exit_code == 2, table.output
    assert "payment_unmatched" in table.output and "possible duplicate charge" in table.output
    assert held.reference in table.output and "flask orders refund REF" in table.output
    assert "flask orders grant REF" in table.output
    [finding] = [f for f in json.loads(as_json.output)["findings"]
                 if f["check"] == "payment_unmatched"]
    assert finding["severity"] == "critical" and finding["details"]["reference"] == held.reference
    assert "refund" in json.loads(as_json.output)["actions"]["payment_unmatched"]
    assert not [f for f in json.loads(as_json.output)["findings"]
                if f["check"] == "order_needs_review"]


def test_operator_refunds_the_held_payment(client, auth, runner):
    sub = _subscribed(client, auth)
    before = _snapshot(sub)
    _signed_post(client, _stray_payment(user().id, plan("lunch-monthly").id))
    held = db.session.scalars(sa.select(Order).where(Order.failure_code == "PAYMENT_UNMATCHED")
                              ).one()

    result = runner.invoke(args=["orders", "refund", held.reference])

    assert result.exit_code == 0, result.output
    db.session.expire_all()
    held = db.session.get(Order, held.id)
    assert held.status == "refunded" and held.refunded_minor == 299900
    assert _snapshot(sub)[:5] == before[:5]  # the live plan is untouched
    assert runner.invoke(args=["monitor", "check"]).exit_code != 2


def test_operator_grants_the_held_payment_once(client, auth, runner):
    sub = _subscribed(client, auth)
    period_end = sub.current_period_end
    body = _stray_payment(user().id, plan("lunch-monthly").id)
    _signed_post(client, body)
    held = db.session.scalars(sa.select(Order).where(Order.failure_code == "PAYMENT_UNMATCHED")
                              ).one()

    granted = runner.invoke(args=["orders", "grant", held.reference])
    again = runner.invoke(args=["orders", "grant", held.reference])
    _signed_post(client, _stray_payment(user().id, plan("lunch-monthly").id))

    assert granted.exit_code == 0, granted.output
    assert again.exit_code == 1 and "ORDER_NOT_FOUND" in again.output
    db.session.expire_all()
    assert db.session.get(Order, held.id).status == "paid"
    assert db.session.get(Subscription, sub.id).current_period_end > period_end
    assert count(NotificationOutbox, NotificationOutbox.kind == "renewal") == 1


def test_grant_refuses_an_order_that_is_not_held(client, auth, runner):
    _subscribed(client, auth)
    paid = db.session.scalars(sa.select(Order)).one()

    result = runner.invoke(args=["orders", "grant", paid.reference, "--json"])

    assert result.exit_code == 1 and json.loads(result.output)["granted"] is False


def test_stray_payment_naming_nobody_is_stored_and_audited(client, auth):
    sub = _subscribed(client, auth)
    before = _snapshot(sub)

    r = _signed_post(client, _stray_payment(None, None, order_id="tgo_nobody"))

    assert r.status_code == 200
    assert _snapshot(sub) == before
    assert count(WebhookEvent) >= 1
    audit = db.session.scalars(sa.select(AuditLogEntry).where(
        AuditLogEntry.action == "payment_unmatched")).one()
    assert audit.details["gateway_order_id"] == "tgo_nobody"


def test_a_return_for_a_held_payment_shows_its_code_not_a_grant(client, auth):
    sub = _subscribed(client, auth)
    before = _snapshot(sub)
    _signed_post(client, _stray_payment(user().id, plan("lunch-monthly").id))
    session = {"order_id": "tgo_not_ours"}
    params = get_gateway("test").signed_return_params(session, "paid", payment_id="tgp_stray")

    r = client.get("/payments/test/return", query_string=params)

    assert r.status_code == 409 and "PAYMENT_UNMATCHED" in r.text
    assert _snapshot(sub) == before


def test_test_gateway_return_cannot_pair_one_order_with_another_payment(client, auth):
    auth.register()
    gateway_page(client, "meal-pack-5")
    order = db.session.scalars(sa.select(Order)).one()
    # A paid return signed for the order, with its payment id swapped for another.
    params = get_gateway("test").signed_return_params({"order_id": order.gateway_order_id},
                                                      "paid", payment_id="tgp_real")
    params["payment_id"] = "tgp_other"

    page = client.get("/payments/test/return", query_string=params)

    assert page.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in page.text
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "pending"
