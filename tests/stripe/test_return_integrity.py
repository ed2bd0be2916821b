"""A Stripe return verifies the order's own session, and a unique-key clash is never a 500."""
import logging

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, NotificationOutbox, Order, Subscription
from tests.conftest import count, user
from tests.stripe.helpers import deliver, paid_session, reload, start

RETURN_PATHS = ["/payments/stripe/return", "/checkout/stripe/return"]


def _two_orders(client, fake):
    """One shopper: a pending plan order, and a pack order paid at Stripe."""
    pending_response, pending = start(client, "lunch-monthly")
    assert pending_response.status_code == 303
    paid, session = paid_session(client, fake, "meal-pack-5")
    return pending, paid, session


def _changed_nothing(pending, paid):
    assert reload(pending).status == "pending" and reload(pending).gateway_payment_id is None
    assert count(Subscription) == 0 and user().plan_meal_credits == 0


@pytest.mark.parametrize("path", RETURN_PATHS)
def test_return_naming_one_order_and_another_paid_session_is_refused(client, auth, fake_stripe,
                                                                      caplog, path):
    auth.register()
    pending, paid, session = _two_orders(client, fake_stripe)

    with caplog.at_level(logging.WARNING):
        r = client.get(f"{path}?order_id={pending.gateway_order_id}&session_id={session['id']}")

    assert r.status_code == 400 and "PAYMENT_SESSION_MISMATCH" in r.text
    _changed_nothing(pending, paid)
    assert reload(paid).status == "pending" and count(CreditLedgerEntry) == 0
    warning = next(rec.getMessage() for rec in caplog.records
                   if "tampering" in rec.getMessage())
    assert pending.gateway_order_id in warning and session["id"] in warning
    assert f"user {user().id}" in warning
    audit = db.session.scalars(sa.select(AuditLogEntry).where(
        AuditLogEntry.action == "payment_session_mismatch")).one()
    assert audit.details["returned_session_id"] == session["id"]
    assert audit.order_id == pending.id and audit.user_id == user().id

    # The paid order's own webhook, late, still fulfils the right order.
    r, _ = deliver(client, fake_stripe, "checkout.session.completed", session)
    assert r.status_code == 200 and r.json["status"] == "processed"
    assert reload(paid).status == "paid" and reload(pending).status == "pending"
    assert user().addon_meal_credits == 5


def test_mismatched_return_after_the_other_order_was_fulfilled_is_a_code_not_a_500(
        client, auth, fake_stripe):
    auth.register()
    pending, paid, session = _two_orders(client, fake_stripe)
    deliver(client, fake_stripe, "checkout.session.completed", session)
    assert reload(paid).status == "paid"

    r = client.get(f"/payments/stripe/return?order_id={pending.gateway_order_id}"
                   f"&session_id={session['id']}")

    assert r.status_code == 400 and "PAYMENT_SESSION_MISMATCH" in r.text
    assert reload(pending).status == "pending" and reload(paid).status == "paid"
    assert count(CreditLedgerEntry) == 1


def test_order_named_by_reference_is_checked_against_its_own_session(client, auth, fake_stripe):
    auth.register()
    pending, _, session = _two_orders(client, fake_stripe)

    r = client.get(f"/payments/stripe/return?order_id={pending.reference}"
                   f"&session_id={session['id']}")

    assert r.status_code == 400 and "PAYMENT_SESSION_MISMATCH" in r.text
    assert reload(pending).status == "pending"


@pytest.mark.parametrize("path", RETURN_PATHS)
def test_return_with_the_orders_own_session_still_fulfils(client, auth, fake_stripe, path):
    auth.register()
    order, session = paid_session(client, fake_stripe)

    r = client.get(f"{path}?order_id={order.gateway_order_id}&session_id={session['id']}")

    assert r.status_code == 303 and order.reference in r.location
    assert reload(order).status == "paid" and count(Subscription) == 1


def test_return_naming_only_the_order_verifies_its_stored_session(client, auth, fake_stripe):
    auth.register()
    order, _ = paid_session(client, fake_stripe)

    r = client.get(f"/payments/stripe/return?order_id={order.gateway_order_id}")

    assert r.status_code == 303 and reload(order).status == "paid"
    retrieved = [path for m, path, *_ in fake_stripe.requests if m == "GET"]
    assert f"/v1/checkout/sessions/{order.gateway_order_id}" in retrieved


def test_another_shoppers_session_on_my_order_is_refused(client, auth, fake_stripe, app):
    auth.register()
    _, mine = start(client, "lunch-monthly")
    auth.logout()
    auth.register(email="ravi@example.com", name="Ravi")
    theirs, session = paid_session(client, fake_stripe, "meal-pack-5")
    auth.logout()
    auth.login()

    r = client.get(f"/payments/stripe/return?order_id={mine.gateway_order_id}"
                   f"&session_id={session['id']}")

    assert r.status_code == 400 and "PAYMENT_SESSION_MISMATCH" in r.text
    assert reload(mine).status == "pending" and reload(theirs).status == "pending"


def test_payment_already_recorded_on_a_paid_order_resolves_to_that_order(client, auth,
                                                                         fake_stripe):
    """Two sessions reporting one PaymentIntent: the unique key refuses the second, and
    the return resolves to the order that holds the payment, never a 500."""
    auth.register()
    first, first_session = paid_session(client, fake_stripe, "meal-pack-5")
    deliver(client, fake_stripe, "checkout.session.completed", first_session)
    second, second_session = paid_session(client, fake_stripe, "meal-pack-5")
    second_session["payment_intent"] = first_session["payment_intent"]

    r = client.get(f"/payments/stripe/return?session_id={second_session['id']}")

    assert r.status_code == 303 and first.reference in r.location
    assert reload(first).status == "paid" and reload(second).status == "pending"
    assert user().addon_meal_credits == 5 and count(NotificationOutbox) == 1


def _payment_held_by_a_failed_order(client, fake, *, list_holder=True):
    """A paid session whose PaymentIntent a failed order of ours already carries."""
    holder, holder_session = paid_session(client, fake, "meal-pack-5")
    db.session.execute(sa.update(Order).where(Order.id == holder.id).values(
        gateway_payment_id=holder_session["payment_intent"], status="failed"))
    db.session.commit()
    if not list_holder:
        fake.sessions.pop(holder_session["id"])
    second, second_session = paid_session(client, fake, "meal-pack-5")
    second_session["payment_intent"] = holder_session["payment_intent"]
    return second, second_session


def test_payment_held_by_an_unsettled_order_is_a_conflict_code_not_a_500(client, auth,
                                                                        fake_stripe):
    auth.register()
    second, second_session = _payment_held_by_a_failed_order(client, fake_stripe)

    r = client.get(f"/payments/stripe/return?session_id={second_session['id']}")
    webhook, _ = deliver(client, fake_stripe, "checkout.session.completed", second_session)

    assert r.status_code == 409 and "PAYMENT_CONFLICT" in r.text
    assert reload(second).status == "needs_review" and reload(second).failure_code == \
        "PAYMENT_CONFLICT"
    assert webhook.status_code == 200 and webhook.json["status"] == "processed"
    assert user().addon_meal_credits == 0 and count(CreditLedgerEntry) == 0


def test_reconcile_fix_meeting_the_same_clash_reports_the_code_and_goes_on(client, auth, runner,
                                                                         fake_stripe):
    auth.register()
    second, second_session = _payment_held_by_a_failed_order(client, fake_stripe,
                                                             list_holder=False)

    result = runner.invoke(args=["reconcile", "--since", "1h", "--fix", "--json"])

    assert result.exit_code == 2, result.output
    assert "PAYMENT_CONFLICT" in result.output and "Traceback" not in result.output
    assert reload(second).status == "needs_review" and count(CreditLedgerEntry) == 0
