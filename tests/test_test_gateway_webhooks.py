"""Redirect and webhook for one payment in either order; signature and body checks."""
import json

import sqlalchemy as sa

from app.extensions import db
from app.gateways import get_gateway
from app.models import CreditLedgerEntry, Order, Subscription, WebhookDeliveryAttempt, WebhookEvent
from tests.conftest import count, user
from tests.flows import gateway_page, return_params


def _session_for(order):
    return {"order_id": order.gateway_order_id, "reference": order.reference,
            "amount_minor": order.amount_minor, "currency": order.currency,
            "user_id": order.user_id, "plan_id": order.meal_plan_id}


def _post_webhook(client, body: bytes, signature: str | None = None):
    headers = {"Content-Type": "application/json"}
    headers["X-Test-Gateway-Signature"] = (get_gateway("test").sign_body(body)
                                           if signature is None else signature)
    return client.post("/webhooks/test", data=body, headers=headers)


def _paid_event(order, payment_id="tgp_manual"):
    return get_gateway("test").build_event(_session_for(order), "payment.succeeded",
                                           payment_id=payment_id)


def _assert_one_of_each():
    assert count(Order, Order.status == "paid") == 1
    assert count(Subscription) == 1
    assert count(CreditLedgerEntry) == 1
    assert user().meal_credits == 20


def test_redirect_first_then_webhook(client, auth):
    auth.register()
    r = client.post(gateway_page(client), data={"outcome": "pay_no_webhook"})
    params = return_params(r.location)
    page = client.get(r.location, follow_redirects=True)
    assert "your payment is confirmed" in page.text
    order = db.session.scalars(sa.select(Order)).one()

    hook = _post_webhook(client, _paid_event(order, params["payment_id"]))

    assert hook.status_code == 200 and hook.json["status"] == "processed"
    _assert_one_of_each()


def test_webhook_first_then_redirect(client, auth):
    auth.register()
    client.post(gateway_page(client), data={"outcome": "pay_no_redirect"})
    order = db.session.scalars(sa.select(Order)).one()
    assert order.status == "paid"
    gw = get_gateway("test")
    params = gw.signed_return_params(_session_for(order), "paid", payment_id=order.gateway_payment_id)

    page = client.get("/payments/test/return", query_string=params, follow_redirects=True)

    assert page.status_code == 200 and "your payment is confirmed" in page.text
    _assert_one_of_each()


def test_same_event_three_times_is_stored_once_and_processed_once(client, auth):
    auth.register()
    client.post(gateway_page(client), data={"outcome": "pay_no_webhook"})
    order = db.session.scalars(sa.select(Order)).one()
    body = _paid_event(order)

    replies = [_post_webhook(client, body) for _ in range(3)]

    assert [r.status_code for r in replies] == [200, 200, 200]
    assert [r.json["duplicate"] for r in replies] == [False, True, True]
    assert count(WebhookEvent) == 1 and count(WebhookDeliveryAttempt) == 1
    _assert_one_of_each()


def test_wrong_signature_is_400_and_stores_nothing(client, auth):
    auth.register()
    client.post(gateway_page(client), data={"outcome": "pay_no_webhook"})
    order = db.session.scalars(sa.select(Order)).one()
    db.session.execute(sa.update(Order).values(status="pending"))
    db.session.commit()

    r = _post_webhook(client, _paid_event(order), signature="0" * 64)

    assert r.status_code == 400 and r.json["error"] == "PAYMENT_SIGNATURE_INVALID"
    assert count(WebhookEvent) == 0


def test_missing_signature_is_400(client):
    r = client.post("/webhooks/test", data=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"] == "PAYMENT_SIGNATURE_INVALID"
    assert count(WebhookEvent) == 0


def test_tampered_body_is_400_and_fulfils_nothing(client, auth):
    auth.register()
    start = gateway_page(client)
    order = db.session.scalars(sa.select(Order)).one()
    body = _paid_event(order)
    signature = get_gateway("test").sign_body(body)
    tampered = body.replace(b'"amount_minor":299900', b'"amount_minor":100')
    assert tampered != body

    r = _post_webhook(client, tampered, signature=signature)

    assert r.status_code == 400
    assert count(WebhookEvent) == 0
    assert db.session.get(Order, order.id).status == "pending" and count(Subscription) == 0
    assert start


def test_malformed_json_with_valid_signature_is_400(client):
    for body in (b"not json", b'{"id": "x"}', json.dumps({"id": 1, "type": "t", "created": 0,
                                                            "data": []}).encode()):
        r = _post_webhook(client, body)
        assert r.status_code == 400 and r.json["error"] == "WEBHOOK_PAYLOAD_INVALID", body
    assert count(WebhookEvent) == 0


def test_unknown_event_type_is_stored_and_ignored(client):
    body = json.dumps({"id": "tge_unknown", "type": "payout.paid", "created": 1700000000,
                       "data": {}}).encode()
    r = _post_webhook(client, body)
    assert r.status_code == 200 and r.json["status"] == "ignored"
    event = db.session.scalars(sa.select(WebhookEvent)).one()
    assert event.status == "ignored" and event.event_type == "payout.paid"


def test_tampered_return_signature_is_refused(client, auth):
    auth.register()
    r = client.post(gateway_page(client), data={"outcome": "decline"})
    params = return_params(r.location)
    params["status"] = "paid"  # flip a decline into a "payment"

    page = client.get("/payments/test/return", query_string=params)

    assert page.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in page.text
    assert count(Subscription) == 0


def test_another_users_return_url_is_a_user_mismatch(client, auth):
    auth.register()
    r = client.post(gateway_page(client), data={"outcome": "pay_no_webhook"})
    url = r.location
    auth.logout()
    auth.register(email="other@example.com", name="Other")

    page = client.get(url)

    assert page.status_code == 403 and "PAYMENT_USER_MISMATCH" in page.text
    assert count(Subscription) == 0
