"""The Razorpay callback verifies against the order id we stored, never the one posted back."""
from app.models import CreditLedgerEntry, Subscription
from tests.conftest import count, user
from tests.razorpay.conftest import order_row


def test_plan_callback_carrying_another_orders_signed_payment_is_refused(shop, razorpay_fake,
                                                                         synced_plans):
    sub_id, _ = shop.start("lunch-monthly")
    pack_id, _ = shop.start("meal-pack-5")
    pack_payment = razorpay_fake.pay_order(pack_id)
    signed_for_pack = razorpay_fake.checkout_signature(pack_id, pack_payment["id"])

    r = shop.client.post("/payments/razorpay/verify", data={
        "order_id": sub_id, "razorpay_subscription_id": sub_id, "razorpay_order_id": pack_id,
        "razorpay_payment_id": pack_payment["id"], "razorpay_signature": signed_for_pack})

    assert r.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in r.text
    assert order_row(sub_id).status == "pending" and order_row(pack_id).status == "pending"
    assert count(Subscription) == 0 and count(CreditLedgerEntry) == 0
    assert user().addon_meal_credits == 0


def test_pack_callback_naming_a_subscription_payment_is_refused(shop, razorpay_fake, synced_plans):
    pack_id, _ = shop.start("meal-pack-5")
    sub_id, _ = shop.start("lunch-monthly")
    charge = razorpay_fake.charge_subscription(sub_id)

    r = shop.client.post("/payments/razorpay/verify", data={
        "order_id": pack_id, "razorpay_order_id": pack_id,
        "razorpay_payment_id": charge["id"],
        "razorpay_signature": razorpay_fake.subscription_signature(charge["id"], sub_id)})

    assert r.status_code == 400 and "PAYMENT_SIGNATURE_INVALID" in r.text
    assert order_row(pack_id).status == "pending" and order_row(sub_id).status == "pending"
