"""`flask orders refund` on the built-in test gateway (tried by hand under `make run`)."""
import json

import sqlalchemy as sa

from app.extensions import db
from app.models import NotificationOutbox, Order, Subscription
from tests.conftest import count, user
from tests.flows import pay


def _paid(client, auth, slug="lunch-monthly"):
    auth.register()
    assert "your payment is confirmed" in pay(client, slug).text
    return db.session.scalars(sa.select(Order)).one()


def test_full_refund_revokes_the_plan(client, auth, runner):
    order = _paid(client, auth)

    result = runner.invoke(args=["orders", "refund", order.reference])

    assert result.exit_code == 0, result.output
    assert "processed" in result.output and "refunded" in result.output
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "refunded"
    assert db.session.scalars(sa.select(Subscription)).one().status == "revoked"
    assert user().plan_meal_credits == 0
    assert count(NotificationOutbox, NotificationOutbox.kind == "refund") == 1


def test_partial_refunds_add_up_and_cannot_exceed_the_payment(client, auth, runner):
    order = _paid(client, auth, "meal-pack-5")

    first = runner.invoke(args=["orders", "refund", order.reference, "--amount", "30000",
                                "--json"])
    rest = runner.invoke(args=["orders", "refund", order.reference, "--json"])
    more = runner.invoke(args=["orders", "refund", order.reference, "--amount", "1"])

    assert first.exit_code == 0 and json.loads(first.output)["order_status"] == \
        "partially_refunded"
    assert rest.exit_code == 0 and json.loads(rest.output)["amount_minor"] == 49900
    assert json.loads(first.output)["refund_id"] != json.loads(rest.output)["refund_id"]
    assert more.exit_code == 1
    db.session.expire_all()
    order = db.session.get(Order, order.id)
    assert order.status == "refunded" and order.refunded_minor == 79900


def test_the_success_page_of_a_refunded_order_never_says_not_charged(client, auth, runner):
    """Charged, then refunded: the shopper sees the order as refunded, not 'not charged'."""
    order = _paid(client, auth)
    assert runner.invoke(args=["orders", "refund", order.reference]).exit_code == 0

    page = client.get(f"/checkout/success/{order.reference}")
    assert page.status_code == 303 and page.location.endswith(f"/account/orders/{order.reference}")
    shown = client.get(page.location)
    assert shown.status_code == 200 and "refunded" in shown.text
    assert "not been charged" not in shown.text and "PAYMENT_NOT_COMPLETED" not in shown.text
