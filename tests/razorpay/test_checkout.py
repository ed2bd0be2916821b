"""One-time packs on Razorpay: the checkout page, the signed callback and what it refuses."""
import re

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, Order
from tests.conftest import count, user
from tests.razorpay.conftest import KEY_ID, order_row


def test_checkout_page_opens_razorpay_with_our_order_and_no_inline_script(shop, razorpay_fake):
    page = shop.checkout_page("meal-pack-5")

    assert page.status_code == 200
    rzp_order = razorpay_fake.calls("POST", "/v1/orders")[0]["json"]
    order = db.session.scalars(sa.select(Order)).one()
    assert rzp_order["amount"] == 79900 and rzp_order["currency"] == "INR"
    assert rzp_order["receipt"] == order.reference
    assert rzp_order["notes"] == {"user_id": str(user().id), "plan_id": str(order.meal_plan_id),
                                  "reference": order.reference}
    assert order.status == "pending" and order.gateway_order_id.startswith("order_")
    html = page.text
    assert 'src="https://checkout.razorpay.com/v1/checkout.js"' in html
    assert "/static/js/razorpay-checkout.js" in html
    assert f'data-key="{KEY_ID}"' in html and f'data-order-id="{order.gateway_order_id}"' in html
    assert 'data-prefill-name="Asha"' in html and 'data-prefill-email="asha@example.com"' in html
    assert 'action="/payments/razorpay/verify"' in html and 'name="csrf_token"' in html
    assert "<noscript>" in html and "not</strong> been charged" in html
    # A strict CSP is coming: every <script> loads a file, none carries a body.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert all(body.strip() == "" for body in re.findall(r"<script[^>]*>(.*?)</script>", html, re.S))


def test_double_click_reuses_the_first_razorpay_order(shop, razorpay_fake):
    page = shop.client.get("/plans/meal-pack-5")
    token = re.search(r'name="checkout_token"[^>]*value="([^"]+)"', page.text).group(1)

    first = shop.checkout_page("meal-pack-5", token=token)
    second = shop.checkout_page("meal-pack-5", token=token)

    assert first.status_code == second.status_code == 200
    assert len(razorpay_fake.calls("POST", "/v1/orders")) == 1
    order = db.session.scalars(sa.select(Order)).one()
    assert f'data-order-id="{order.gateway_order_id}"' in second.text
    assert 'data-prefill-email="asha@example.com"' in second.text


def test_good_signature_fulfils_and_shows_success(shop, razorpay_fake):
    order_id, posted = shop.start("meal-pack-5")
    assert posted == order_id
    payment = razorpay_fake.pay_order(order_id)

    r = shop.verify(order_id, payment["id"], follow=True)

    assert r.status_code == 200 and "your payment is confirmed" in r.text
    order = order_row(order_id)
    assert order.status == "paid" and order.gateway_payment_id == payment["id"]
    assert user().addon_meal_credits == 5 and count(CreditLedgerEntry) == 1
    assert razorpay_fake.calls("GET", f"/v1/payments/{payment['id']}")


def test_bad_signature_is_400_and_changes_nothing(shop, razorpay_fake):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id)

    r = shop.verify(order_id, payment["id"], signature="0" * 64)

    assert r.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in r.text
    assert order_row(order_id).status == "pending" and user().meal_credits == 0


def test_signature_is_checked_against_our_stored_order_not_the_posted_one(shop, razorpay_fake):
    """A signature valid for another Razorpay order does not pay for this one."""
    ours, _ = shop.start()
    other = razorpay_fake._create_order(None, {"amount": 100, "currency": "INR"}).json["id"]
    cheap = razorpay_fake.pay_order(other)

    r = shop.verify(ours, cheap["id"], razorpay_fake.checkout_signature(other, cheap["id"]),
                    posted_razorpay_order_id=other)

    assert r.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in r.text
    assert order_row(ours).status == "pending" and user().meal_credits == 0


def test_missing_callback_fields_are_400_not_500(shop, razorpay_fake):
    order_id, _ = shop.start()

    r = shop.client.post("/payments/razorpay/verify", data={"order_id": order_id})

    assert r.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in r.text


def test_callback_for_another_shoppers_order_is_refused(shop, razorpay_fake, auth):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id)
    auth.logout()
    auth.register(email="ravi@example.com", name="Ravi")

    r = shop.verify(order_id, payment["id"])

    assert r.status_code == 403 and "PAYMENT_USER_MISMATCH" in r.text
    assert order_row(order_id).status == "pending"


def test_amount_mismatch_is_refused_and_put_in_review(shop, razorpay_fake):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id, amount=100)

    r = shop.verify(order_id, payment["id"])

    assert r.status_code == 409 and "PAYMENT_AMOUNT_MISMATCH" in r.text
    order = order_row(order_id)
    assert order.status == "needs_review" and order.failure_code == "PAYMENT_AMOUNT_MISMATCH"
    assert user().meal_credits == 0 and count(CreditLedgerEntry) == 0
    assert count(AuditLogEntry, AuditLogEntry.action == "fulfilment_refused") == 1


def test_authorised_payment_is_captured_then_fulfilled(shop, razorpay_fake):
    """Auto-capture off: the callback captures the authorised payment for the order's amount."""
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id, status="authorized")

    r = shop.verify(order_id, payment["id"], follow=True)

    assert r.status_code == 200 and "your payment is confirmed" in r.text
    capture = razorpay_fake.calls("POST", f"/v1/payments/{payment['id']}/capture")
    assert [c["json"] for c in capture] == [{"amount": 79900, "currency": "INR"}]
    assert order_row(order_id).status == "paid" and user().addon_meal_credits == 5


def test_authorised_but_not_captured_is_pending_and_noted(shop, razorpay_fake):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id, status="authorized")
    razorpay_fake.fail_captures = True

    r = shop.verify(order_id, payment["id"])

    assert r.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in r.text
    order = order_row(order_id)
    assert order.status == "pending" and order.authorized_at is not None
    assert user().meal_credits == 0

    # Razorpay captures it later (or the operator does): the webhook fulfils.
    razorpay_fake.fail_captures = False
    razorpay_fake.payments[payment["id"]].update(status="captured", captured=True)
    hook = shop.webhook("payment.captured", payment=razorpay_fake.payments[payment["id"]])
    assert hook.status_code == 200 and order_row(order_id).status == "paid"
    assert shop.client.get(f"/checkout/success/{order.reference}").status_code == 200


def test_razorpay_unreachable_on_callback_is_pending_not_failure(shop, razorpay_fake):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id)
    razorpay_fake.server.clear()  # Razorpay's API now answers nothing we know (500)

    r = shop.verify(order_id, payment["id"])

    assert r.status_code == 202 and "PAYMENT_PENDING_CONFIRMATION" in r.text
    assert order_row(order_id).status == "pending"


def test_callback_after_webhook_fulfilled_shows_success(shop, razorpay_fake):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id)
    shop.webhook("payment.captured", payment=payment)

    r = shop.verify(order_id, payment["id"], follow=True)

    assert r.status_code == 200 and "your payment is confirmed" in r.text
    assert count(Order, Order.status == "paid") == 1 and count(CreditLedgerEntry) == 1


def test_failed_payment_then_successful_retry_on_the_same_order(shop, razorpay_fake):
    order_id, _ = shop.start()
    failed = razorpay_fake.fail_payment(order_id, description="Your UPI PIN was incorrect.")
    hook = shop.webhook("payment.failed", payment=failed)
    assert hook.status_code == 200
    order = order_row(order_id)
    assert order.status == "failed" and order.failure_message == "Your UPI PIN was incorrect."
    page = shop.client.get(f"/checkout/success/{order.reference}")
    assert page.status_code == 402 and "Your UPI PIN was incorrect." in page.text

    retry = razorpay_fake.pay_order(order_id)
    shop.webhook("payment.captured", payment=retry)

    order = order_row(order_id)
    assert order.status == "paid" and order.gateway_payment_id == retry["id"]
    assert order.failure_message is None and user().addon_meal_credits == 5
    # The late failure's webhook delivered again changes nothing now.
    shop.webhook("payment.failed", payment=failed)
    assert order_row(order_id).status == "paid" and count(CreditLedgerEntry) == 1


def test_payment_refunded_before_the_callback_is_not_fulfilled(shop, razorpay_fake):
    order_id, _ = shop.start()
    payment = razorpay_fake.pay_order(order_id)
    razorpay_fake.refund_outside(payment["id"], payment["amount"])

    r = shop.verify(order_id, payment["id"])

    assert r.status_code == 402 and "PAYMENT_NOT_COMPLETED" in r.text
    assert order_row(order_id).status == "pending" and user().meal_credits == 0


def test_verify_callback_is_proved_by_its_signature_not_a_form_token(app, razorpay_fake):
    """With CSRF on (as in production), a shopper who paid after the page's form token
    expired (or whose session was renewed) is still confirmed: the callback is proved
    by Razorpay's signature; a forged one is refused whatever token it carries."""
    from tests.conftest import form_token, make_app
    from tests.razorpay.conftest import KEY_ID, KEY_SECRET, WEBHOOK_SECRET

    strict = make_app(WTF_CSRF_ENABLED=True, RAZORPAY_KEY_ID=KEY_ID,
                      RAZORPAY_KEY_SECRET=KEY_SECRET, RAZORPAY_WEBHOOK_SECRET=WEBHOOK_SECRET,
                      RAZORPAY_API_BASE=razorpay_fake.base_url)
    client = strict.test_client()
    form = client.get("/register").text
    client.post("/register", data={"name": "Asha", "email": "asha@example.com",
                                   "password": "correct horse 1", "confirm": "correct horse 1",
                                   "csrf_token": form_token(form, "csrf_token")})
    plan_page = client.get("/plans/meal-pack-5").text
    page = client.post("/checkout/meal-pack-5", data={
        "gateway": "razorpay", "csrf_token": form_token(plan_page, "csrf_token"),
        "checkout_token": form_token(plan_page, "checkout_token")})
    assert page.status_code == 200, page.text
    order_id = re.search(r'data-order-id="([^"]+)"', page.text).group(1)
    payment = razorpay_fake.pay_order(order_id)
    fields = {"order_id": order_id, "razorpay_order_id": order_id,
              "razorpay_payment_id": payment["id"],
              "razorpay_signature": razorpay_fake.checkout_signature(order_id, payment["id"])}

    forged = client.post("/payments/razorpay/verify", data={
        **fields, "razorpay_signature": "0" * 64,
        "csrf_token": form_token(page.text, "csrf_token")})
    assert forged.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in forged.text
    assert order_row(order_id).status == "pending"

    without_token = client.post("/payments/razorpay/verify", data=fields)

    assert without_token.status_code == 303 and order_row(order_id).status == "paid"
    assert client.post("/logout").status_code == 400  # other forms still need their token
