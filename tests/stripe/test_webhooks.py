"""POST /webhooks/stripe: signatures, livemode, and every handled event type."""
import time

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import (CreditLedgerEntry, NotificationOutbox, Order, Subscription,
                        WebhookDeliveryAttempt, WebhookEvent)
from app.services.access import has_access
from app.services.webhook_inbox import process_event
from tests.conftest import count, plan, user
from tests.fakes.stripe import post_event
from tests.stripe.conftest import PREVIOUS_WEBHOOK_SECRET
from tests.stripe.helpers import deliver, paid_session, point_stripe_at, reload, subscribe


# --- signatures and livemode -------------------------------------------------
def test_stale_signature_timestamp_is_rejected(client, auth, fake_stripe):
    auth.register()
    _, session = paid_session(client, fake_stripe)
    r, _ = deliver(client, fake_stripe, "checkout.session.completed", session,
                   timestamp=int(time.time()) - 301)
    assert r.status_code == 400 and r.json["error"] == "PAYMENT_SIGNATURE_INVALID"
    assert count(WebhookEvent) == 0 and count(Subscription) == 0


def test_signature_from_another_secret_is_rejected(client, auth, fake_stripe):
    auth.register()
    _, session = paid_session(client, fake_stripe)
    r, _ = deliver(client, fake_stripe, "checkout.session.completed", session,
                   secret="whsec_someone_else")
    assert r.status_code == 400 and r.json["error"] == "PAYMENT_SIGNATURE_INVALID"
    assert count(WebhookEvent) == 0


def test_missing_signature_is_rejected(client, fake_stripe):
    r = client.post("/webhooks/stripe", data=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"] == "PAYMENT_SIGNATURE_INVALID"


def test_rotated_secret_is_still_accepted(client, auth, fake_stripe):
    auth.register()
    _, session = paid_session(client, fake_stripe)
    r, _ = deliver(client, fake_stripe, "checkout.session.completed", session,
                   secret=PREVIOUS_WEBHOOK_SECRET)
    assert r.status_code == 200 and r.json["status"] == "processed"
    assert count(Subscription) == 1


def test_header_with_several_v1_signatures_passes_when_one_matches(client, auth, fake_stripe):
    import json

    from tests.fakes.stripe import signed_headers
    auth.register()
    _, session = paid_session(client, fake_stripe)
    body = json.dumps(fake_stripe.event("checkout.session.completed", session)).encode()
    headers = signed_headers(body, PREVIOUS_WEBHOOK_SECRET)
    headers["Stripe-Signature"] += ",v1=" + "0" * 64  # Stripe signs with old and new during rollover
    r = client.post("/webhooks/stripe", data=body, headers=headers)
    assert r.status_code == 200 and count(Subscription) == 1


def test_test_mode_event_on_a_live_key_is_rejected(app, client, auth, fake_stripe):
    auth.register()
    _, session = paid_session(client, fake_stripe)
    app.config["STRIPE_SECRET_KEY"] = "sk_live_tiffin"
    app.extensions.get("tiffin_gateways", {}).pop("stripe", None)
    r, _ = deliver(client, fake_stripe, "checkout.session.completed", session, livemode=False)
    assert r.status_code == 400 and r.json["error"] == "WEBHOOK_LIVEMODE_MISMATCH"
    assert count(WebhookEvent) == 0 and count(Subscription) == 0


def test_live_event_on_a_test_key_is_rejected(client, auth, fake_stripe):
    auth.register()
    _, session = paid_session(client, fake_stripe)
    r, _ = deliver(client, fake_stripe, "checkout.session.completed", session, livemode=True)
    assert r.status_code == 400 and r.json["error"] == "WEBHOOK_LIVEMODE_MISMATCH"
    assert count(WebhookEvent) == 0


def test_unknown_event_type_is_stored_and_ignored(client, fake_stripe):
    r, _ = deliver(client, fake_stripe, "customer.tax_id.created", {"id": "txi_1", "object": "tax_id"})
    assert r.status_code == 200 and r.json["status"] == "ignored"
    assert db.session.scalars(sa.select(WebhookEvent)).one().status == "ignored"


# --- checkout.session.* ------------------------------------------------------
def test_checkout_session_completed_fulfils_without_the_redirect(client, auth, fake_stripe):
    auth.register()
    order, session, sub = subscribe(client, fake_stripe)
    order = reload(order)
    assert order.status == "paid" and sub.gateway_subscription_id == session["subscription"]
    assert user().plan_meal_credits == 20 and user().stripe_customer_id == session["customer"]
    assert count(NotificationOutbox, NotificationOutbox.kind == "payment_confirmed") == 1


def test_completed_but_unpaid_waits_then_async_success_fulfils(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe, payment_status="unpaid")
    r, _ = deliver(client, fake_stripe, "checkout.session.completed", session)
    assert r.json["status"] == "processed" and reload(order).status == "pending"
    session["payment_status"] = "paid"
    r, _ = deliver(client, fake_stripe, "checkout.session.async_payment_succeeded", session)
    assert r.json["status"] == "processed" and reload(order).status == "paid"
    assert count(Subscription) == 1 and user().plan_meal_credits == 20


def test_async_payment_failed_fails_the_order(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe, payment_status="unpaid")
    r, _ = deliver(client, fake_stripe, "checkout.session.async_payment_failed", session)
    order = reload(order)
    assert r.json["status"] == "processed"
    assert order.status == "failed" and order.failure_code == "async_payment_failed"
    assert count(Subscription) == 0


def test_invoice_paid_before_checkout_session_completed(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe)
    first = fake_stripe.invoice(session["subscription"], billing_reason="subscription_create",
                                amount=299900, invoice_id=session["invoice"])

    r1, _ = deliver(client, fake_stripe, "invoice.paid", first)
    r2, _ = deliver(client, fake_stripe, "checkout.session.completed", session)

    assert r1.json["status"] == r2.json["status"] == "processed"
    assert count(Order) == 1 and reload(order).status == "paid"
    assert count(Subscription) == 1 and count(CreditLedgerEntry) == 1
    assert user().plan_meal_credits == 20


def test_first_invoice_does_not_grant_credits_again(client, auth, fake_stripe):
    auth.register()
    order, session, sub = subscribe(client, fake_stripe)
    _use_meals(7)
    first = fake_stripe.invoice(session["subscription"], billing_reason="subscription_create",
                                amount=299900, invoice_id=session["invoice"])
    r, _ = deliver(client, fake_stripe, "invoice.paid", first)
    assert r.json["status"] == "processed"
    assert user().plan_meal_credits == 13 and count(CreditLedgerEntry) == 2  # grant + usage
    assert count(Order) == 1


def _use_meals(n):
    """Shoppers spend meals elsewhere in the app; here, a ledgered usage."""
    from app.services import credits
    u = user()
    credits.reset_plan_credits(u.id, u.plan_meal_credits - n, reason="meals_used",
                               source_key=f"usage:{u.id}:{n}:{time.monotonic_ns()}")
    db.session.commit()


# --- invoices: renewals, failures, 3-D Secure --------------------------------
def _renew(client, fake, session, **kw):
    start, end = fake.advance_period(session["subscription"])
    invoice = fake.invoice(session["subscription"], billing_reason="subscription_cycle",
                           amount=299900, **kw)
    r, event = deliver(client, fake, "invoice.paid", invoice)
    return r, invoice, end


def test_renewal_extends_period_and_resets_credits(client, auth, fake_stripe):
    auth.register()
    order, session, sub = subscribe(client, fake_stripe)
    _use_meals(15)

    r, invoice, end = _renew(client, fake_stripe, session)

    assert r.json["status"] == "processed"
    renewal = db.session.scalars(sa.select(Order).where(Order.gateway_order_id == invoice["id"])).one()
    assert renewal.kind == "renewal" and renewal.status == "paid" and renewal.amount_minor == 299900
    assert renewal.parent_order_id == order.id
    sub = reload(sub)
    assert int(sub.current_period_end.timestamp()) == end and sub.status == "active"
    assert user().plan_meal_credits == 20
    assert count(NotificationOutbox, NotificationOutbox.kind == "renewal") == 1


def test_renewal_for_a_subscription_we_do_not_know_yet_fails_for_retry(client, auth, fake_stripe):
    auth.register()
    _, session = paid_session(client, fake_stripe)
    invoice = fake_stripe.invoice(session["subscription"], billing_reason="subscription_cycle",
                                  amount=299900)
    r, _ = deliver(client, fake_stripe, "invoice.paid", invoice)
    assert r.status_code == 200 and r.json["status"] == "failed"  # the retry command runs it later


def test_failed_renewal_gives_grace_then_no_access_then_renewal_restores(client, auth, fake_stripe):
    import datetime as dt

    import time_machine
    auth.register()
    order, session, sub = subscribe(client, fake_stripe)
    failed = fake_stripe.invoice(session["subscription"], billing_reason="subscription_cycle",
                                 amount=299900, status="open")

    r, _ = deliver(client, fake_stripe, "invoice.payment_failed", failed)

    sub = reload(sub)
    assert r.json["status"] == "processed" and sub.status == "past_due"
    assert sub.grace_period_ends_at is not None and has_access(sub)
    grace_days = (sub.grace_period_ends_at - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400
    assert 2.99 < grace_days <= 3
    mail = db.session.scalars(sa.select(NotificationOutbox).where(
        NotificationOutbox.kind == "payment_failed")).one()
    assert failed["hosted_invoice_url"] in mail.body_text

    with time_machine.travel(sub.grace_period_ends_at + dt.timedelta(minutes=1), tick=False):
        assert not has_access(reload(sub))
        page = client.get("/account/")
        assert 'data-testid="access" data-access="no"' in page.text

    r, _, _ = _renew(client, fake_stripe, session)
    sub = reload(sub)
    assert sub.status == "active" and sub.grace_period_ends_at is None and has_access(sub)
    assert user().plan_meal_credits == 20 and user().subscription_status == "active"


def test_payment_action_required_emails_the_hosted_invoice_link(client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    invoice = fake_stripe.invoice(session["subscription"], billing_reason="subscription_cycle",
                                  amount=299900, status="open")
    r, _ = deliver(client, fake_stripe, "invoice.payment_action_required", invoice)
    assert r.json["status"] == "processed"
    mail = db.session.scalars(sa.select(NotificationOutbox).where(
        NotificationOutbox.kind == "action_required")).one()
    assert invoice["hosted_invoice_url"] in mail.body_text and mail.to_email == "asha@example.com"


# --- customer.subscription.* -------------------------------------------------
def test_subscription_updated_syncs_state_refetched_from_stripe(client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    remote = fake_stripe.subscriptions[session["subscription"]]
    stale_copy = dict(remote, cancel_at_period_end=False)
    remote["cancel_at_period_end"] = True
    # The event's own data is older than what Stripe says now: Stripe wins.
    r, _ = deliver(client, fake_stripe, "customer.subscription.updated", stale_copy)
    assert r.json["status"] == "processed" and reload(sub).cancel_at_period_end is True


def test_older_event_never_overwrites_newer_when_stripe_unreachable(app, client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    remote = fake_stripe.subscriptions[session["subscription"]]
    newer = dict(remote, status="past_due")
    older = dict(remote, status="active", cancel_at_period_end=True)
    point_stripe_at(app)
    now = int(time.time())

    deliver(client, fake_stripe, "customer.subscription.updated", newer, created=now)
    deliver(client, fake_stripe, "customer.subscription.updated", older, created=now - 60)

    sub = reload(sub)
    assert sub.status == "past_due" and sub.cancel_at_period_end is False
    assert int(sub.last_gateway_event_at.timestamp()) == now


def test_plan_change_upgrade_resets_credits_to_new_plan_minus_used(client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    _use_meals(5)
    remote = fake_stripe.subscriptions[session["subscription"]]
    remote["items"]["data"][0]["price"] = fake_stripe.prices["price_family"]
    r, _ = deliver(client, fake_stripe, "customer.subscription.updated", remote)
    assert r.json["status"] == "processed"
    assert reload(sub).meal_plan_id == plan("family-monthly").id
    assert user().plan_meal_credits == 35  # 40 on the new plan, 5 already eaten


def test_plan_change_downgrade_caps_used_meals_at_zero(client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe, "family-monthly")
    _use_meals(35)
    remote = fake_stripe.subscriptions[session["subscription"]]
    remote["items"]["data"][0]["price"] = fake_stripe.prices["price_lunch"]
    deliver(client, fake_stripe, "customer.subscription.updated", remote)
    assert reload(sub).meal_plan_id == plan("lunch-monthly").id
    assert user().plan_meal_credits == 0


def test_subscription_deleted_ends_it_with_access_to_period_end(client, auth, fake_stripe):
    import datetime as dt

    import time_machine
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    remote = dict(fake_stripe.subscriptions[session["subscription"]], status="canceled")
    r, _ = deliver(client, fake_stripe, "customer.subscription.deleted", remote)
    sub = reload(sub)
    assert r.json["status"] == "processed" and sub.status == "canceled" and has_access(sub)
    with time_machine.travel(sub.current_period_end + dt.timedelta(seconds=1), tick=False):
        assert not has_access(reload(sub))


# --- charges, disputes, customers --------------------------------------------
def _first_payment_intent(fake, session):
    return next(p["payment"]["payment_intent"] for p in fake.invoice_payments
                if p["invoice"] == session["invoice"])


def test_full_refund_revokes_access(client, auth, fake_stripe):
    auth.register()
    order, session, sub = subscribe(client, fake_stripe)
    charge = fake_stripe.charge(payment_intent=_first_payment_intent(fake_stripe, session),
                                amount=299900, amount_refunded=299900)
    r, _ = deliver(client, fake_stripe, "charge.refunded", charge)
    assert r.json["status"] == "processed"
    assert reload(order).status == "refunded" and reload(order).refunded_minor == 299900
    sub = reload(sub)
    assert sub.status == "revoked" and not has_access(sub) and user().plan_meal_credits == 0


def test_partial_refund_is_recorded_and_access_stays(client, auth, fake_stripe):
    auth.register()
    order, session, sub = subscribe(client, fake_stripe)
    charge = fake_stripe.charge(payment_intent=_first_payment_intent(fake_stripe, session),
                                amount=299900, amount_refunded=50000)
    deliver(client, fake_stripe, "charge.refunded", charge)
    order = reload(order)
    assert order.status == "partially_refunded" and order.refunded_minor == 50000
    assert reload(sub).status == "active" and has_access(reload(sub))


def test_refund_of_an_addon_pack_is_found_by_payment_intent(client, auth, fake_stripe):
    auth.register()
    order, session = paid_session(client, fake_stripe, "meal-pack-5")
    deliver(client, fake_stripe, "checkout.session.completed", session)
    charge = fake_stripe.charge(payment_intent=session["payment_intent"], amount=79900,
                                amount_refunded=79900)
    deliver(client, fake_stripe, "charge.refunded", charge)
    assert reload(order).status == "refunded"


def test_dispute_revokes_access_at_once(client, auth, fake_stripe):
    auth.register()
    order, session, sub = subscribe(client, fake_stripe)
    pi = _first_payment_intent(fake_stripe, session)
    dispute = fake_stripe.dispute(payment_intent=pi, charge="ch_x", amount=299900)
    r, _ = deliver(client, fake_stripe, "charge.dispute.created", dispute)
    assert r.json["status"] == "processed"
    assert reload(order).status == "disputed" and reload(sub).status == "revoked"
    assert not has_access(reload(sub))
    assert count(NotificationOutbox, NotificationOutbox.kind == "dispute") == 1


def test_customer_deleted_clears_ids_and_revokes(client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    r, _ = deliver(client, fake_stripe, "customer.deleted",
                   {"id": session["customer"], "object": "customer", "deleted": True})
    sub = reload(sub)
    assert r.json["status"] == "processed"
    assert sub.status == "revoked" and sub.revoke_reason == "customer_deleted"
    assert sub.gateway_subscription_id is None and sub.gateway_customer_id is None
    assert user().stripe_customer_id is None and not has_access(sub)


# --- replay of every event -----------------------------------------------------
def _state():
    db.session.expire_all()
    u = user()
    return (
        [(o.gateway_order_id, o.status, o.refunded_minor) for o in
         db.session.scalars(sa.select(Order).order_by(Order.id))],
        [(s.status, s.meal_plan_id, s.cancel_at_period_end, s.current_period_end,
          s.grace_period_ends_at, s.gateway_subscription_id) for s in
         db.session.scalars(sa.select(Subscription).order_by(Subscription.id))],
        u.plan_meal_credits, u.addon_meal_credits, u.stripe_customer_id,
        count(CreditLedgerEntry), count(NotificationOutbox),
    )


def _scenario(kind, client, fake):
    """Set up, then return the (type, object) of the one event under test."""
    if kind == "checkout.session.completed":
        _, session = paid_session(client, fake)
        return kind, session
    if kind == "checkout.session.async_payment_succeeded":
        _, session = paid_session(client, fake)
        return kind, session
    if kind == "checkout.session.async_payment_failed":
        _, session = paid_session(client, fake, payment_status="unpaid")
        return kind, session
    _, session, _ = subscribe(client, fake)
    sub_id = session["subscription"]
    if kind == "invoice.paid":
        fake.advance_period(sub_id)
        return kind, fake.invoice(sub_id, billing_reason="subscription_cycle", amount=299900)
    if kind in ("invoice.payment_failed", "invoice.payment_action_required"):
        return kind, fake.invoice(sub_id, billing_reason="subscription_cycle", amount=299900,
                                  status="open")
    if kind == "customer.subscription.updated":
        remote = fake.subscriptions[sub_id]
        remote["items"]["data"][0]["price"] = fake.prices["price_family"]
        remote["cancel_at_period_end"] = True
        return kind, remote
    if kind == "customer.subscription.deleted":
        fake.subscriptions[sub_id]["status"] = "canceled"
        return kind, fake.subscriptions[sub_id]
    if kind == "charge.refunded":
        return kind, fake.charge(payment_intent=_first_payment_intent(fake, session),
                                 amount=299900, amount_refunded=100000)
    if kind == "charge.dispute.created":
        return kind, fake.dispute(payment_intent=_first_payment_intent(fake, session),
                                  charge="ch_x", amount=299900)
    if kind == "customer.deleted":
        return kind, {"id": session["customer"], "object": "customer", "deleted": True}
    raise AssertionError(kind)


EVENT_TYPES = [
    "checkout.session.completed", "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed", "invoice.paid", "invoice.payment_failed",
    "invoice.payment_action_required", "customer.subscription.updated",
    "customer.subscription.deleted", "charge.refunded", "charge.dispute.created",
    "customer.deleted",
]


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_replaying_an_event_changes_nothing(kind, client, auth, fake_stripe):
    from app.webhooks.handlers.stripe import HANDLERS
    assert set(EVENT_TYPES) == set(HANDLERS)
    auth.register()
    type_, obj = _scenario(kind, client, fake_stripe)
    before = _state()
    event = fake_stripe.event(type_, obj)

    first = post_event(client, event, "whsec_current_secret")
    after_first = _state()
    redelivered = post_event(client, event, "whsec_current_secret")
    stored = db.session.scalars(sa.select(WebhookEvent).where(
        WebhookEvent.event_id == event["id"])).one()
    replayed = process_event(stored, trigger="replay")  # an operator's replay runs the handler again

    assert first.status_code == 200 and first.json["status"] == "processed"
    assert after_first != before, "the event under test changed nothing"
    assert redelivered.status_code == 200 and redelivered.json["duplicate"] is True
    assert replayed == "processed"
    assert _state() == after_first
    assert count(WebhookDeliveryAttempt, WebhookDeliveryAttempt.webhook_event_id == stored.id) == 2


def test_older_payment_failure_after_a_newer_renewal_changes_nothing(client, auth, fake_stripe):
    auth.register()
    _, session, sub = subscribe(client, fake_stripe)
    now = int(time.time())
    fake_stripe.advance_period(session["subscription"])
    paid = fake_stripe.invoice(session["subscription"], billing_reason="subscription_cycle",
                               amount=299900)
    failed = fake_stripe.invoice(session["subscription"], billing_reason="subscription_cycle",
                                 amount=299900, status="open")

    deliver(client, fake_stripe, "invoice.paid", paid, created=now)
    r, _ = deliver(client, fake_stripe, "invoice.payment_failed", failed, created=now - 3600)

    assert r.json["status"] == "processed"
    sub = reload(sub)
    assert sub.status == "active" and sub.grace_period_ends_at is None
    assert count(NotificationOutbox, NotificationOutbox.kind == "payment_failed") == 0
