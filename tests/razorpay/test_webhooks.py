"""POST /webhooks/razorpay: signature, secret rotation, dedupe, and the payment events."""
import json

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, Order, Subscription, WebhookEvent
from tests.conftest import count, user
from tests.razorpay.conftest import OLD_WEBHOOK_SECRET, order_row


def _captured(shop, fake, slug="meal-pack-5"):
    order_id, _ = shop.start(slug)
    return order_id, fake.pay_order(order_id)


def test_payment_captured_fulfils_and_the_event_is_stored(shop, razorpay_fake):
    order_id, payment = _captured(shop, razorpay_fake)

    r = shop.webhook("payment.captured", payment=payment, event_id="evt_Captured0001")

    assert r.status_code == 200 and r.json["status"] == "processed"
    assert order_row(order_id).status == "paid" and user().addon_meal_credits == 5
    event = db.session.scalars(sa.select(WebhookEvent)).one()
    assert event.event_id == "evt_Captured0001" and event.event_type == "payment.captured"
    assert event.gateway == "razorpay" and event.gateway_created_at is not None


def test_order_paid_fulfils_from_the_payment_it_carries(shop, razorpay_fake):
    order_id, payment = _captured(shop, razorpay_fake)

    r = shop.webhook("order.paid", payment=payment, order=razorpay_fake.orders[order_id])

    assert r.status_code == 200 and order_row(order_id).status == "paid"
    assert user().addon_meal_credits == 5


def test_same_event_id_twice_is_stored_and_acted_on_once(shop, razorpay_fake):
    order_id, payment = _captured(shop, razorpay_fake)
    body, headers = razorpay_fake.webhook("payment.captured", secret="whsec_rzp_current",
                                          payment=payment, event_id="evt_Twice000001")

    first = shop.client.post("/webhooks/razorpay", data=body, headers=headers)
    second = shop.client.post("/webhooks/razorpay", data=body, headers=headers)

    assert first.status_code == second.status_code == 200
    assert first.json["duplicate"] is False and second.json["duplicate"] is True
    assert count(WebhookEvent) == 1 and count(CreditLedgerEntry) == 1
    assert user().addon_meal_credits == 5


def test_redelivery_after_fulfilment_under_a_new_event_id_changes_nothing(shop, razorpay_fake):
    order_id, payment = _captured(shop, razorpay_fake)
    shop.webhook("payment.captured", payment=payment)
    shop.webhook("order.paid", payment=payment, order=razorpay_fake.orders[order_id])
    shop.webhook("payment.captured", payment=payment)

    assert count(WebhookEvent) == 3 and count(CreditLedgerEntry) == 1
    assert count(Order, Order.status == "paid") == 1


def test_missing_signature_header_is_400_not_500(shop, razorpay_fake):
    _, payment = _captured(shop, razorpay_fake)
    body, headers = razorpay_fake.webhook("payment.captured", secret="whsec_rzp_current",
                                          payment=payment)
    del headers["X-Razorpay-Signature"]

    r = shop.client.post("/webhooks/razorpay", data=body, headers=headers)

    assert r.status_code == 400 and r.json["error"] == "PAYMENT_SIGNATURE_INVALID"
    assert count(WebhookEvent) == 0 and user().meal_credits == 0


def test_bad_signature_and_tampered_body_are_400(shop, razorpay_fake):
    _, payment = _captured(shop, razorpay_fake)
    forged = shop.webhook("payment.captured", secret="whsec_attacker", payment=payment)
    body, headers = razorpay_fake.webhook("payment.captured", secret="whsec_rzp_current",
                                          payment=payment)
    tampered = shop.client.post("/webhooks/razorpay", headers=headers,
                                data=body.replace(b'"amount":79900', b'"amount":79901'))

    assert forged.status_code == 400 and tampered.status_code == 400
    assert count(WebhookEvent) == 0 and user().meal_credits == 0


def test_rotated_secret_old_deliveries_still_verify(shop, razorpay_fake):
    """Razorpay retries deliveries made before a rotation with the old secret."""
    order_id, payment = _captured(shop, razorpay_fake)

    r = shop.webhook("payment.captured", secret=OLD_WEBHOOK_SECRET, payment=payment)

    assert r.status_code == 200 and r.json["status"] == "processed"
    assert order_row(order_id).status == "paid"


def test_body_that_is_not_razorpay_json_is_400(shop, razorpay_fake):
    from tests.fakes.razorpay import hmac_hex

    body = b'{"hello":"world"}'
    r = shop.client.post("/webhooks/razorpay", data=body, headers={
        "X-Razorpay-Signature": hmac_hex("whsec_rzp_current", body.decode()),
        "X-Razorpay-Event-Id": "evt_Bad00000001"})

    assert r.status_code == 400 and r.json["error"] == "WEBHOOK_PAYLOAD_INVALID"


def test_payment_authorized_is_noted_and_captured(shop, razorpay_fake):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id, status="authorized")

    r = shop.webhook("payment.authorized", payment=payment)

    assert r.status_code == 200
    order = order_row(order_id)
    assert order.authorized_at is not None and order.status == "paid"
    assert razorpay_fake.payments[payment["id"]]["status"] == "captured"


def test_payment_authorized_capture_failing_leaves_it_noted_for_the_monitor(shop, razorpay_fake):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id, status="authorized")
    razorpay_fake.fail_captures = True

    r = shop.webhook("payment.authorized", payment=payment)

    assert r.status_code == 200
    order = order_row(order_id)
    assert order.status == "pending" and order.authorized_at is not None
    assert user().meal_credits == 0


def test_late_events_for_a_fulfilled_order_change_nothing(shop, razorpay_fake):
    order_id, payment = _captured(shop, razorpay_fake)
    shop.webhook("payment.captured", payment=payment)
    paid_at = order_row(order_id).paid_at
    failed = dict(payment, id="pay_LateFailure01", status="failed", captured=False,
                  error_code="BAD_REQUEST_ERROR", error_description="Late decline")

    shop.webhook("payment.failed", payment=failed)
    shop.webhook("payment.authorized", payment=dict(payment, status="authorized"))

    order = order_row(order_id)
    assert order.status == "paid" and order.paid_at == paid_at and order.authorized_at is None
    assert order.failure_message is None and count(CreditLedgerEntry) == 1


def test_captured_payment_without_our_pending_row_is_held_until_an_operator_grants_it(
        shop, razorpay_fake, runner):
    """Our row was lost: the notes name user and plan, but that is no order of ours, so
    the payment is held for review and grants nothing until an operator decides."""
    order_id, _ = shop.start()
    pending = order_row(order_id)
    razorpay_fake.payment_notes = {"user_id": str(pending.user_id),
                                   "plan_id": str(pending.meal_plan_id)}
    payment = razorpay_fake.pay_order(order_id)
    db.session.execute(sa.delete(AuditLogEntry).where(AuditLogEntry.order_id == pending.id))
    db.session.delete(pending)
    db.session.commit()

    r = shop.webhook("payment.captured", payment=payment)
    again = shop.webhook("payment.captured", payment=payment)

    held = order_row(order_id)
    assert r.status_code == 200 and r.json["status"] == "processed" and again.status_code == 200
    assert held.status == "needs_review" and held.failure_code == "PAYMENT_UNMATCHED"
    assert held.gateway_payment_id == payment["id"] and count(Order) == 1
    assert user().addon_meal_credits == 0 and count(CreditLedgerEntry) == 0

    granted = runner.invoke(args=["orders", "grant", held.reference])

    assert granted.exit_code == 0, granted.output
    assert order_row(order_id).status == "paid" and user().addon_meal_credits == 5


def test_unknown_event_types_are_stored_and_acknowledged(shop, razorpay_fake):
    _, payment = _captured(shop, razorpay_fake)

    r = shop.webhook("payment.downtime.started", payment=payment)

    assert r.status_code == 200 and r.json["status"] == "ignored"
    assert json.loads(json.dumps(db.session.scalars(sa.select(WebhookEvent)).one().payload))[
        "event"] == "payment.downtime.started"
    assert count(Subscription) == 0
