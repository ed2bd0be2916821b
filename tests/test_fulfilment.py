"""The one fulfilment helper: idempotent, race-safe, and strict about what it accepts."""
import threading

import pytest
import sqlalchemy as sa

from app.errors import TiffinError
from app.extensions import db
from app.models import AuditLogEntry, CreditLedgerEntry, NotificationOutbox, Order, Subscription, User
from app.services.fulfilment import _create_subscription_and_order
from tests.conftest import count, plan


def make_user(email="ravi@example.com") -> User:
    u = User(email=email, name="Ravi")
    u.set_password("pw-123456")
    db.session.add(u)
    db.session.commit()
    return u


def pending_order(u, slug="lunch-monthly", gateway_order_id="tgo_1") -> Order:
    p = plan(slug)
    o = Order(user_id=u.id, meal_plan_id=p.id, gateway="test", gateway_order_id=gateway_order_id,
              amount_minor=p.price_minor, currency=p.currency,
              kind="subscription" if p.is_recurring else "addon")
    db.session.add(o)
    db.session.commit()
    return o


def fulfil(u, slug="lunch-monthly", gateway_order_id="tgo_1", payment_id="tgp_1", amount=None,
           currency=None, **kw):
    p = plan(slug)
    return _create_subscription_and_order(
        u, p, "test", gateway_order_id, payment_id, p.price_minor if amount is None else amount,
        currency or p.currency, actor="test", **kw)


def test_called_twice_returns_same_rows_and_changes_nothing(app):
    u = make_user()
    pending_order(u)
    first = fulfil(u)
    second = fulfil(u)

    assert first.created is True and second.created is False
    assert second.order.id == first.order.id and second.subscription.id == first.subscription.id
    assert count(Order) == 1 and count(Subscription) == 1
    assert count(CreditLedgerEntry) == 1
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled") == 1
    assert count(NotificationOutbox) == 1
    assert db.session.get(User, u.id).plan_meal_credits == 20


def test_fulfils_a_payment_whose_pending_order_was_never_stored(app):
    u = make_user()
    result = fulfil(u, gateway_order_id="tgo_lost")
    assert result.created and result.order.status == "paid" and result.order.user_id == u.id
    assert result.subscription.status == "active"


def test_user_mismatch_is_refused_and_leaves_order_alone(app):
    owner, other = make_user(), make_user("mallory@example.com")
    order = pending_order(owner)
    with pytest.raises(TiffinError) as exc:
        fulfil(other)
    assert exc.value.code == "PAYMENT_USER_MISMATCH"
    assert db.session.get(Order, order.id).status == "pending"
    assert count(Subscription) == 0 and count(CreditLedgerEntry) == 0
    assert count(AuditLogEntry, AuditLogEntry.action == "fulfilment_refused") == 1
    # The owner's own confirmation still fulfils afterwards.
    assert fulfil(owner).created


def test_metadata_naming_another_user_is_refused(app):
    owner, other = make_user(), make_user("mallory@example.com")
    pending_order(owner)
    with pytest.raises(TiffinError) as exc:
        fulfil(owner, metadata_user_id=other.id)
    assert exc.value.code == "PAYMENT_USER_MISMATCH"
    assert count(Subscription) == 0


@pytest.mark.parametrize("amount,currency", [(100, None), (None, "USD")])
def test_amount_or_currency_mismatch_puts_order_in_review(app, amount, currency):
    u = make_user()
    order = pending_order(u)
    with pytest.raises(TiffinError) as exc:
        fulfil(u, amount=amount, currency=currency)
    assert exc.value.code == "PAYMENT_AMOUNT_MISMATCH"
    order = db.session.get(Order, order.id)
    assert order.status == "needs_review" and order.failure_code == "PAYMENT_AMOUNT_MISMATCH"
    assert count(Subscription) == 0 and db.session.get(User, u.id).meal_credits == 0


def test_inactive_plan_is_refused(app):
    u = make_user()
    order = pending_order(u)
    p = plan("lunch-monthly")
    p.is_active = False
    db.session.commit()
    with pytest.raises(TiffinError) as exc:
        fulfil(u)
    assert exc.value.code == "PLAN_INACTIVE"
    assert db.session.get(Order, order.id).status == "needs_review"
    assert count(Subscription) == 0


def test_failed_order_can_still_become_paid(app):
    """Late authorisation: a decline followed by a capture ends paid and fulfilled."""
    u = make_user()
    order = pending_order(u)
    order.status = "failed"
    db.session.commit()
    assert fulfil(u).created
    assert db.session.get(Order, order.id).status == "paid"


def test_renewal_through_helper_extends_and_resets_credits(app):
    u = make_user()
    pending_order(u)
    first = fulfil(u)
    period_end = first.subscription.current_period_end
    db.session.execute(sa.update(User).where(User.id == u.id).values(plan_meal_credits=3))
    db.session.commit()

    renewal = fulfil(u, gateway_order_id="tgo_renewal", payment_id="tgp_2")

    assert renewal.created and renewal.order.kind == "renewal"
    assert renewal.order.parent_order_id == first.order.id
    assert renewal.subscription.id == first.subscription.id
    assert renewal.subscription.current_period_end > period_end
    assert db.session.get(User, u.id).plan_meal_credits == 20
    assert count(Subscription) == 1


def _run_threads(app, n, target):
    barrier = threading.Barrier(n)
    results, errors = [], []

    def worker():
        with app.app_context():
            try:
                barrier.wait()
                results.append(target())
            except Exception as exc:  # collected and asserted below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_eight_threads_same_gateway_order_fulfil_once(app, pg_only):
    u = make_user()
    pending_order(u)
    user_id, plan_id = u.id, plan("lunch-monthly").id

    def call():
        user, p = db.session.get(User, user_id), db.session.get(type(plan("lunch-monthly")), plan_id)
        r = _create_subscription_and_order(user, p, "test", "tgo_1", "tgp_1", p.price_minor,
                                           p.currency, actor="thread")
        return (r.order.id, r.subscription.id, r.created)

    results, errors = _run_threads(app, 8, call)

    assert errors == []
    assert len(results) == 8
    assert len({(o, s) for o, s, _ in results}) == 1
    assert sum(1 for *_, created in results if created) == 1
    db.session.expire_all()
    assert count(Order) == 1 and count(Subscription) == 1
    assert count(CreditLedgerEntry) == 1
    assert count(AuditLogEntry, AuditLogEntry.action == "order_fulfilled") == 1
    assert count(NotificationOutbox) == 1
    assert db.session.get(User, user_id).plan_meal_credits == 20


def test_eight_threads_same_unstored_order_fulfil_once(app, pg_only):
    """No pending row at all: the unique key on (gateway, gateway_order_id) decides."""
    u = make_user()
    user_id = u.id

    def call():
        user, p = db.session.get(User, user_id), plan("lunch-monthly")
        r = _create_subscription_and_order(user, p, "test", "tgo_x", "tgp_x", p.price_minor,
                                           p.currency, actor="thread")
        return (r.order.id, r.created)

    results, errors = _run_threads(app, 8, call)

    assert errors == []
    assert len({o for o, _ in results}) == 1 and sum(c for _, c in results) == 1
    assert count(Order) == 1 and count(Subscription) == 1 and count(CreditLedgerEntry) == 1


def test_concurrent_add_on_packs_never_lose_meals(app, pg_only):
    u = make_user()
    user_id = u.id
    for i in range(8):
        pending_order(u, "meal-pack-5", gateway_order_id=f"tgo_pack_{i}")
    counter = iter(range(8))
    lock = threading.Lock()

    def call():
        with lock:
            i = next(counter)
        user, p = db.session.get(User, user_id), plan("meal-pack-5")
        return _create_subscription_and_order(user, p, "test", f"tgo_pack_{i}", f"tgp_pack_{i}",
                                              p.price_minor, p.currency, actor="thread").created

    results, errors = _run_threads(app, 8, call)

    assert errors == [] and results.count(True) == 8
    db.session.expire_all()
    assert db.session.get(User, user_id).addon_meal_credits == 40
    assert count(CreditLedgerEntry) == 8


def _gateway_billed_subscription(u, gateway_subscription_id="sub_gw_1"):
    pending_order(u)
    first = fulfil(u, gateway_subscription_id=gateway_subscription_id)
    return first


def test_gateway_renewal_with_prorated_amount_is_accepted(app):
    u = make_user()
    first = _gateway_billed_subscription(u)
    p = plan("lunch-monthly")

    renewal = _create_subscription_and_order(u, p, "test", "in_renewal_1", "pi_1", 12345,
                                             p.currency, actor="test",
                                             gateway_subscription_id="sub_gw_1")

    assert renewal.created and renewal.order.status == "paid"
    assert renewal.order.amount_minor == 12345 and renewal.subscription.id == first.subscription.id


def test_gateway_renewal_in_another_currency_is_refused(app):
    u = make_user()
    _gateway_billed_subscription(u)
    p = plan("lunch-monthly")
    with pytest.raises(TiffinError) as exc:
        _create_subscription_and_order(u, p, "test", "in_renewal_2", "pi_2", p.price_minor, "USD",
                                       actor="test", gateway_subscription_id="sub_gw_1")
    assert exc.value.code == "PAYMENT_AMOUNT_MISMATCH"


def test_retired_plan_keeps_renewing_but_is_not_sold_again(app):
    u = make_user()
    _gateway_billed_subscription(u)
    p = plan("lunch-monthly")
    p.is_active = False
    db.session.commit()

    renewal = _create_subscription_and_order(u, p, "test", "in_renewal_3", "pi_3", p.price_minor,
                                             p.currency, actor="test",
                                             gateway_subscription_id="sub_gw_1")
    assert renewal.created

    other = make_user("new@example.com")
    with pytest.raises(TiffinError) as exc:
        fulfil(other, gateway_order_id="tgo_new", payment_id="tgp_new")
    assert exc.value.code == "PLAN_INACTIVE"


def test_amount_differing_from_list_price_is_still_refused_for_a_first_payment(app):
    u = make_user()
    with pytest.raises(TiffinError) as exc:
        fulfil(u, gateway_order_id="tgo_direct", amount=12345, gateway_subscription_id="sub_new")
    assert exc.value.code == "PAYMENT_AMOUNT_MISMATCH"
