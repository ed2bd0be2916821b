"""Razorpay: the pending page asks Razorpay about a payment whose callback and
webhook were lost; an expired checkout's page is not shown again."""
from datetime import datetime, timedelta, timezone

import time_machine

from app.models import Subscription
from tests.conftest import count, user
from tests.razorpay.conftest import order_row


def test_lost_callback_and_webhook_pending_page_asks_razorpay_and_fulfils(shop, razorpay_fake):
    gateway_id, _ = shop.start()
    razorpay_fake.pay_order(gateway_id)
    order = order_row(gateway_id)

    page = shop.client.get(f"/checkout/success/{order.reference}")

    assert page.status_code == 200 and "your payment is confirmed" in page.text
    assert order_row(gateway_id).status == "paid" and user().addon_meal_credits == 5


def test_unpaid_order_is_waiting_and_continue_reopens_the_checkout_page(shop, razorpay_fake):
    gateway_id, _ = shop.start()
    order = order_row(gateway_id)

    page = shop.client.get(f"/checkout/success/{order.reference}")
    again = shop.client.get(f"/checkout/continue/{order.reference}")

    assert page.status_code == 402 and "PAYMENT_AWAITING_SHOPPER" in page.text
    assert again.status_code == 200 and f'data-order-id="{gateway_id}"' in again.text


def test_after_expiry_the_checkout_page_is_not_shown_again(shop, razorpay_fake):
    gateway_id, _ = shop.start()
    order = order_row(gateway_id)
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(minutes=61), tick=False):
        again = shop.client.get(f"/checkout/continue/{order.reference}")
        page = shop.client.get(again.location)

    assert again.status_code == 303
    assert page.status_code == 402 and "Not completed — you were not charged" in page.text
    assert order_row(gateway_id).status == "canceled"


def test_subscription_checkout_asks_razorpay_to_expire_its_link(shop, razorpay_fake, synced_plans):
    gateway_id, _ = shop.start("lunch-monthly")
    order = order_row(gateway_id)
    assert razorpay_fake.subscriptions[gateway_id]["expire_by"] == \
        int(order.checkout_expires_at.timestamp())
    assert count(Subscription) == 0
