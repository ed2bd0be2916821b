"""Starting a checkout and confirming what the shopper's browser brings back."""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Mapping

import sqlalchemy as sa
from flask import current_app, url_for

from app import logs, metrics
from app.errors import CATALOGUE, TiffinError
from app.extensions import db
from app.gateways import get_gateway
from app.gateways.base import DECLINED, NOT_COMPLETED, PAID, PENDING, CheckoutStart, PaymentResult
from app.models import MealPlan, Order, User
from app.models.order import (ORDER_CANCELED, ORDER_FAILED, ORDER_KIND_ADDON, ORDER_KIND_NEW,
                              ORDER_KIND_PLAN_CHANGE, ORDER_NEEDS_REVIEW, ORDER_PENDING)
from app.models.types import utcnow
from app.services import audit
from app.services.fulfilment import (SETTLED, FulfilmentResult, _create_subscription_and_order,
                                     find_order, live_subscription)

log = logging.getLogger("tiffin.checkout")


def get_plan(slug: str, *, for_sale: bool = True) -> MealPlan:
    plan = db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == slug)).first()
    if plan is None:
        raise TiffinError("PLAN_NOT_FOUND", f"no plan {slug!r}")
    if for_sale and not plan.is_active:
        raise TiffinError("PLAN_INACTIVE", f"plan {slug!r} is inactive")
    return plan


def start_checkout(user: User, plan_slug: str, gateway_name: str, checkout_token: str | None
                   ) -> tuple[Order, CheckoutStart]:
    """Create a pending order and the gateway's checkout for it.

    A repeated submit of the same form (same `checkout_token`) gets the first
    order and its gateway checkout back instead of opening a second one.
    """
    plan = get_plan(plan_slug)
    gateway = get_gateway(gateway_name)
    if checkout_token:
        existing = db.session.scalars(sa.select(Order).where(
            Order.checkout_token == checkout_token, Order.user_id == user.id)).first()
        resumed = _resume_checkout(existing)
        if resumed is not None and existing.status == ORDER_PENDING:
            return existing, resumed
    if plan.is_recurring and live_subscription(user.id) is not None:
        raise TiffinError("ALREADY_SUBSCRIBED", f"user {user.id} has a live subscription")

    order = Order(user_id=user.id, meal_plan_id=plan.id, gateway=gateway.name,
                  amount_minor=plan.price_minor, currency=plan.currency,
                  kind=ORDER_KIND_NEW if plan.is_recurring else ORDER_KIND_ADDON,
                  checkout_token=checkout_token or None)
    db.session.add(order)
    try:
        db.session.flush()
        logs.bind(order_reference=order.reference)
        audit.record(f"user:{user.id}", "checkout_started", "order", order.id, user_id=user.id,
                     order_id=order.id, gateway=gateway.name, plan=plan.slug)
        # Commit before calling the gateway: our reference must exist before
        # the gateway can possibly send a webhook naming it.
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()  # the same token raced in from a double-click
        return _await_first_submit(user, checkout_token)
    return order, open_gateway_checkout(order, plan, user, gateway)


def open_gateway_checkout(order: Order, plan: MealPlan, user: User, gateway) -> CheckoutStart:
    """Open the gateway's checkout for a committed pending order and keep where it
    leads; a gateway that refuses marks the order failed (and re-raises its error).
    The checkout lives CHECKOUT_EXPIRY_MINUTES (or what the gateway allows)."""
    order.checkout_expires_at = utcnow() + timedelta(
        minutes=current_app.config["CHECKOUT_EXPIRY_MINUTES"])
    try:
        started = gateway.start_checkout(order=order, plan=plan, user=user)
    except TiffinError as exc:
        order.status = ORDER_FAILED
        order.failure_code = exc.code
        order.failure_message = exc.detail
        audit.record(f"user:{user.id}", "checkout_failed", "order", order.id, user_id=user.id,
                     order_id=order.id, code=exc.code, detail=exc.detail)
        db.session.commit()
        raise
    metrics.CHECKOUT_STARTS.labels(gateway.name).inc()
    order.gateway_order_id = started.gateway_order_id
    order.checkout_url = started.redirect_url
    order.checkout_expires_at = started.expires_at or order.checkout_expires_at
    if started.template:  # a page of ours (Razorpay checkout.js): keep what re-renders it
        order.gateway_data = {**(order.gateway_data or {}), "checkout": {
            "template": started.template, "context": started.context}}
    db.session.commit()
    return started


def _await_first_submit(user: User, checkout_token: str, *, tries: int = 20,
                        pause: float = 0.25) -> tuple[Order, CheckoutStart]:
    """A double-click's second request: wait briefly for the first one to open the
    gateway checkout, then send this request to the same place."""
    for _ in range(tries):
        existing = db.session.scalars(sa.select(Order).where(
            Order.checkout_token == checkout_token)).first()
        if existing is None or existing.user_id != user.id:
            raise TiffinError("PAYMENT_SESSION_NOT_FOUND", "checkout token belongs to another user")
        resumed = _resume_checkout(existing)
        if resumed is not None:
            return existing, resumed
        if existing.status != ORDER_PENDING:  # the first submit failed at the gateway
            raise TiffinError(existing.failure_code if existing.failure_code in CATALOGUE
                              else "GATEWAY_UNAVAILABLE", f"first submit ended {existing.status}")
        db.session.rollback()  # a fresh snapshot for the next look
        time.sleep(pause)
    raise TiffinError("GATEWAY_UNAVAILABLE", "first submit of this checkout is still opening")


def _resume_checkout(order: Order | None) -> CheckoutStart | None:
    """The checkout an order already opened (redirect or page), for a repeated submit."""
    if order is None or not order.gateway_order_id:
        return None
    page = (order.gateway_data or {}).get("checkout")
    if order.checkout_url or page:
        return CheckoutStart(gateway_order_id=order.gateway_order_id,
                             redirect_url=order.checkout_url,
                             template=page["template"] if page else None,
                             context=dict(page["context"]) if page else {})
    return None


def confirm_return(gateway_name: str, user: User, params: Mapping) -> FulfilmentResult:
    """Verify a return/callback and fulfil through the one helper.

    The order is the one the return names (`order_id`, else the session id); the
    gateway is asked only about that order's own session or order id, and a return
    that names another one is refused as PAYMENT_SESSION_MISMATCH, changing nothing.
    Raises TiffinError with the code to show: PAYMENT_PENDING_CONFIRMATION when the
    payment may still land (never a failure for a payment that may have succeeded).
    """
    gateway = get_gateway(gateway_name)
    order = _returned_order(gateway, user, params)
    if order.status in SETTLED:
        # Already paid (the webhook won, or a refresh): the shopper's own order, no
        # need to ask the gateway again.
        return FulfilmentResult(order.id, created=False)
    result = gateway.verify_return(params, order=order)
    if result.gateway_order_id and result.gateway_order_id != order.gateway_order_id:
        _refuse_session_mismatch(gateway.name, order, user, result.gateway_order_id)
    if result.status == PAID:
        return _fulfil_paid(order, user, result, actor=f"user:{user.id}")
    if result.status == PENDING:
        if result.raw.get("authorized"):
            mark_order_authorized(order, at=result.created_at or utcnow(), actor=f"user:{user.id}")
        elif order.status == ORDER_FAILED:
            # The bank's decline already reached us (Stripe's async payment failed): the
            # session still reads "complete, unpaid", but nothing is being confirmed.
            raise TiffinError("PAYMENT_DECLINED", f"order {order.reference} {order.failure_code}",
                              order_reference=order.reference,
                              shopper_detail=order.failure_message,
                              retry_plan_slug=_retry_slug(order))
        raise TiffinError("PAYMENT_PENDING_CONFIRMATION", f"order {order.reference} still processing",
                          order_reference=order.reference)
    if result.status == DECLINED:
        mark_order_failed(order, result.failure_code or "declined", result.failure_message,
                          actor=f"user:{user.id}")
        raise TiffinError("PAYMENT_DECLINED", f"order {order.reference}: {result.failure_code}",
                          order_reference=order.reference, shopper_detail=result.failure_message,
                          retry_plan_slug=_retry_slug(order))
    assert result.status == NOT_COMPLETED
    raise TiffinError("PAYMENT_NOT_COMPLETED", f"order {order.reference} not completed",
                      order_reference=order.reference, retry_plan_slug=_retry_slug(order))


def _retry_slug(order: Order) -> str | None:
    """The plan page to try again from; none for a plan change's difference (the
    plan page would start a second plan: the account page is the way back)."""
    return None if order.kind == ORDER_KIND_PLAN_CHANGE else order.meal_plan.slug


def _fulfil_paid(order: Order, user: User, result: PaymentResult, *, actor: str
                 ) -> FulfilmentResult:
    """A payment the gateway reports paid for one of our orders, through the one helper."""
    return _create_subscription_and_order(
        user, order.meal_plan, order.gateway, order.gateway_order_id, result.gateway_payment_id,
        result.amount_minor, result.currency, actor=actor,
        metadata_user_id=result.metadata_user_id,
        gateway_customer_id=result.gateway_customer_id,
        gateway_subscription_id=result.gateway_subscription_id,
        period_start=result.period_start, period_end=result.period_end)


def _returned_order(gateway, user: User, params: Mapping) -> Order:
    """The shopper's own order a return or callback names, checked against every
    session id the return carries (the gateway verifies only the order's own)."""
    named = params.get("order_id") or params.get("session_id") or ""
    order = find_order(gateway.name, named) if named else None
    if order is None and named:  # a return may name the order by our reference
        order = db.session.scalars(sa.select(Order).where(
            Order.reference == named, Order.gateway == gateway.name)).first()
    if order is None:
        raise TiffinError("PAYMENT_SESSION_NOT_FOUND", f"{gateway.name} order {named!r}")
    if order.user_id != user.id:
        raise TiffinError("PAYMENT_USER_MISMATCH",
                          f"order {order.reference} belongs to user {order.user_id}, "
                          f"returned by user {user.id}")
    for field in gateway.return_session_fields:
        other = params.get(field)
        if other and other != order.gateway_order_id:
            _refuse_session_mismatch(gateway.name, order, user, other)
    return order


def _refuse_session_mismatch(gateway_name: str, order: Order, user: User, other_id: str):
    """Log and audit a return naming one order and another's session; change nothing."""
    order_id, reference, stored = order.id, order.reference, order.gateway_order_id
    log.warning("possible tampering: %s return for order %s (%s) names session %s; user %s; "
                "nothing changed", gateway_name, reference, stored, other_id, user.id)
    db.session.rollback()
    audit.record(f"user:{user.id}", "payment_session_mismatch", "order", order_id,
                 user_id=user.id, order_id=order_id, gateway=gateway_name,
                 stored_session_id=stored, returned_session_id=other_id)
    db.session.commit()
    raise TiffinError("PAYMENT_SESSION_MISMATCH",
                      f"order {reference} ({stored}) returned with {gateway_name} session "
                      f"{other_id} by user {user.id}", order_reference=reference)


def mark_order_failed(order: Order, failure_code: str, failure_message: str | None, *,
                      actor: str) -> bool:
    """Record a decline on a pending order; a paid order is never moved back."""
    order = find_order(order.gateway, order.gateway_order_id, for_update=True)
    if order is None or order.status != ORDER_PENDING:
        db.session.rollback()
        return False
    order.status = ORDER_FAILED
    order.failure_code = failure_code
    order.failure_message = failure_message
    audit.record(actor, "payment_failed", "order", order.id, user_id=order.user_id,
                 order_id=order.id, failure_code=failure_code)
    db.session.commit()
    metrics.CHECKOUT_DECLINES.labels(order.gateway).inc()
    return True


def mark_order_authorized(order: Order, *, at, actor: str) -> bool:
    """Note that the gateway holds an authorised, uncaptured payment for a pending order
    (Razorpay refunds those after a few days; the monitor watches `authorized_at`)."""
    order = find_order(order.gateway, order.gateway_order_id, for_update=True)
    if order is None or order.status not in (ORDER_PENDING, ORDER_FAILED) or order.authorized_at:
        db.session.rollback()
        return False
    order.authorized_at = at
    audit.record(actor, "payment_authorized", "order", order.id, user_id=order.user_id,
                 order_id=order.id)
    db.session.commit()
    return True


def cancel_checkout(user: User, reference: str) -> tuple[Order, bool]:
    """The shopper came back through the gateway's cancel link.

    The gateway is asked first (throttled, as on the pending page): an order that is
    paid, or whose payment is authorised or being confirmed, is left alone and
    (order, True) is returned so the shopper is shown where it stands. Only a
    still-pending order with nothing received is marked cancelled: (order, False).
    """
    order = check_order(user, reference)
    if order.status in SETTLED or order.status == ORDER_NEEDS_REVIEW \
            or checkout_state(order) == CONFIRMING:
        return order, True
    if order.status == ORDER_PENDING:
        order = find_order(order.gateway, order.gateway_order_id, for_update=True) \
            if order.gateway_order_id else order
        if order.status == ORDER_PENDING:
            order.status = ORDER_CANCELED
            audit.record(f"user:{user.id}", "checkout_canceled", "order", order.id,
                         user_id=user.id, order_id=order.id)
        db.session.commit()
    return order, False


# Where an unfinished checkout stands, as the pending page and the account page say it.
WAITING = "waiting"        # the gateway's page waits for the shopper: nothing received
CONFIRMING = "confirming"  # the gateway said paid, authorised or processing: we are finishing
UNKNOWN = "unknown"        # we could not ask the gateway yet: money may have moved
EXPIRED = "expired"        # the checkout's lifetime passed with nothing received
CANCELED = "canceled"      # the shopper left through the cancel link: nothing received
DECLINED_STATE = "declined"
CHECKOUT_EXPIRED = "checkout_expired"  # failure_code of an order closed by its lifetime
SAID_NOT_COMPLETED, SAID_PENDING, SAID_UNREACHABLE = "not_completed", "pending", "unreachable"
UNFINISHED = (ORDER_PENDING, ORDER_CANCELED, ORDER_FAILED)


def checkout_state(order: Order, now=None) -> str | None:
    """WAITING, CONFIRMING, UNKNOWN, EXPIRED, CANCELED or DECLINED_STATE for a checkout
    that has not (yet) become an order we were paid for; None for any other order.

    `gateway_said` is the gateway's last answer to the pending page's check; an order
    nobody asked about yet counts as waiting (or expired) on the account page.
    """
    now = now or utcnow()
    if order.status == ORDER_CANCELED:
        return EXPIRED if order.failure_code == CHECKOUT_EXPIRED else CANCELED
    if order.status == ORDER_FAILED:
        return DECLINED_STATE
    if order.status != ORDER_PENDING:
        return None
    if order.authorized_at is not None or order.gateway_said == SAID_PENDING:
        return CONFIRMING
    if order.gateway_said == SAID_UNREACHABLE:
        return UNKNOWN
    return EXPIRED if checkout_expired(order, now) else WAITING


def checkout_expired(order: Order, now=None) -> bool:
    return order.checkout_expires_at is not None and (now or utcnow()) >= order.checkout_expires_at


def check_order(user: User, reference: str) -> Order:
    """The shopper's order, after asking its gateway where an unfinished payment stands.

    The gateway is asked at most once per GATEWAY_STATUS_CHECK_SECONDS per order,
    across workers (a conditional UPDATE of `gateway_checked_at` decides who asks);
    a payment it reports paid is fulfilled through the one helper, so a shopper whose
    webhook was lost sees success without waiting for the reconcile. A pending order
    whose checkout expired with nothing received is closed (cancelled, not charged;
    a late payment is still honoured).
    """
    order = order_for_user(user, reference)
    if order.status not in (ORDER_PENDING, ORDER_CANCELED) or not order.gateway_order_id:
        return order
    now = utcnow()
    if order.status == ORDER_PENDING and order.returned_at is None:
        _update_order(order, Order.returned_at.is_(None), returned_at=now)
    cutoff = now - timedelta(seconds=current_app.config["GATEWAY_STATUS_CHECK_SECONDS"])
    if _update_order(order, sa.or_(Order.gateway_checked_at.is_(None),
                                   Order.gateway_checked_at <= cutoff),
                     gateway_checked_at=now):
        _ask_gateway(order, user)
    expire_checkouts(user_id=user.id, now=now, actor=f"user:{user.id}")
    return order_for_user(user, reference)


def _update_order(order: Order, condition, **values) -> bool:
    """Set `values` on an unfinished order if `condition` still holds, and commit.
    True when this call changed it: the compare-and-set other workers lose."""
    changed = db.session.execute(
        sa.update(Order).where(Order.id == order.id, Order.status.in_(UNFINISHED), condition)
        .values(**values).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return changed == 1


def _ask_gateway(order: Order, user: User) -> None:
    """Ask the order's gateway once and act on the answer (see check_order)."""
    actor = f"user:{user.id}"
    try:
        result = get_gateway(order.gateway).lookup_payment(order)
    except TiffinError as exc:
        log.warning("could not ask %s about order %s: %s", order.gateway, order.reference, exc)
        _update_order(order, sa.true(), gateway_said=SAID_UNREACHABLE)
        return
    if result.status == PAID:
        try:
            _fulfil_paid(order, user, result, actor=actor)
        except TiffinError:
            pass  # refused, logged and audited by the helper; the order shows its code
    elif result.status == PENDING:
        if result.raw.get("authorized"):
            mark_order_authorized(order, at=result.created_at or utcnow(), actor=actor)
        _update_order(order, sa.true(), gateway_said=SAID_PENDING)
    elif result.status == DECLINED and order.status == ORDER_PENDING:
        mark_order_failed(order, result.failure_code or "declined", result.failure_message,
                          actor=actor)
    else:
        _update_order(order, sa.true(), gateway_said=SAID_NOT_COMPLETED)


def continue_checkout(user: User, reference: str) -> tuple[Order, CheckoutStart | None]:
    """The checkout an unfinished order opened, to pay it now: (order, where to go),
    or (order, None) when it can no longer be paid (paid, closed or expired)."""
    order = order_for_user(user, reference)
    if order.status != ORDER_PENDING or checkout_expired(order):
        return order, None
    return order, _resume_checkout(order)


def unpaid_refusal(order: Order) -> TiffinError:
    """What the success page says about an order we have not been paid for (yet)."""
    state = checkout_state(order)
    reference, slug = order.reference, _retry_slug(order)
    if state in (CONFIRMING, UNKNOWN):
        since = order.returned_at or order.created_at
        refresh_for = timedelta(minutes=current_app.config["PENDING_REFRESH_MINUTES"])
        refresh = utcnow() < since + refresh_for
        page = {"state": state, "refresh": refresh}
        if state == UNKNOWN:
            page["headline"] = "We could not reach the payment provider yet to confirm your payment."
        elif not refresh:
            page["headline"] = "Your payment has been received and is still being confirmed."
        if not refresh:
            page["next_step"] = ("Press “Check again” to look now, or see your account page "
                                 "later. If you paid, there is no need to pay again.")
        elif state == UNKNOWN:
            page["next_step"] = ("If you paid, there is no need to pay again: this page checks "
                                 "again by itself, and we email you as soon as it is confirmed.")
        return TiffinError("PAYMENT_PENDING_CONFIRMATION", f"order {reference} {state}",
                           order_reference=reference, page=page)
    if state == WAITING:
        return TiffinError("PAYMENT_AWAITING_SHOPPER", f"order {reference} awaits payment",
                           order_reference=reference, retry_plan_slug=slug, page={
                               "state": state, "continue_url": url_for(
                                   "checkout.continue_payment", reference=reference)
                               if _resume_checkout(order) else None})
    if state == EXPIRED:
        return TiffinError("PAYMENT_NOT_COMPLETED", f"order {reference} checkout expired",
                           order_reference=reference, retry_plan_slug=slug, page={
                               "state": state,
                               "headline": "Not completed — you were not charged.",
                               "next_step": "This checkout expired before a payment was made. "
                                            "Start again from the plan if you still want it."})
    if order.status == ORDER_NEEDS_REVIEW:
        code = order.failure_code if order.failure_code in CATALOGUE else "PAYMENT_AMOUNT_MISMATCH"
        return TiffinError(code, f"order {reference} needs review", order_reference=reference)
    if state == DECLINED_STATE:
        return TiffinError("PAYMENT_DECLINED", f"order {reference} declined",
                           order_reference=reference, shopper_detail=order.failure_message,
                           retry_plan_slug=slug)
    return TiffinError("PAYMENT_NOT_COMPLETED", f"order {reference} is {order.status}",
                       order_reference=reference, retry_plan_slug=slug,
                       page={"state": state} if state else None)


def expire_checkouts(*, user_id: int | None = None, now=None, actor: str = "system") -> int:
    """Close pending orders whose checkout lifetime passed with nothing received (the
    gateway never said otherwise): cancelled with failure_code checkout_expired, so
    they read "Not completed — you were not charged". An order whose payment is
    authorised or being confirmed, or whose gateway could not be asked, stays pending.
    A late payment for a closed one is still honoured (the helper fulfils cancelled
    orders). Returns how many were closed; one transaction.
    """
    now = now or utcnow()
    lapsed = sa.and_(Order.status == ORDER_PENDING, Order.checkout_expires_at <= now,
                     Order.authorized_at.is_(None),
                     sa.or_(Order.gateway_said.is_(None), Order.gateway_said == SAID_NOT_COMPLETED))
    if user_id is not None:
        lapsed = sa.and_(lapsed, Order.user_id == user_id)
    # Look before writing: most views of the account page have nothing to close.
    candidates = db.session.execute(sa.select(Order.id, Order.user_id).where(lapsed)).all()
    if not candidates:
        return 0
    ids = [order_id for order_id, _ in candidates]
    closed = db.session.execute(
        sa.update(Order).where(lapsed, Order.id.in_(ids))
        .values(status=ORDER_CANCELED, failure_code=CHECKOUT_EXPIRED)
        .returning(Order.id, Order.user_id).execution_options(synchronize_session=False)).all()
    if closed:
        audit.record_all([audit.entry(actor, "checkout_expired", "order", order_id,
                                      user_id=owner, order_id=order_id)
                          for order_id, owner in closed])
    db.session.commit()
    return len(closed)


def account_history(user: User, now=None) -> tuple[list[Order], list[tuple[Order, str]]]:
    """The account page's two lists: orders (paid, refunded, in review) and, apart
    from them, unfinished checkouts with their state, newest first. Checkouts whose
    lifetime passed are closed first."""
    expire_checkouts(user_id=user.id, now=now, actor=f"user:{user.id}")
    rows = db.session.scalars(sa.select(Order).where(Order.user_id == user.id)
                              .order_by(Order.created_at.desc(), Order.id.desc()).limit(100)).all()
    orders = [o for o in rows if o.status not in UNFINISHED][:50]
    checkouts = [(o, checkout_state(o, now)) for o in rows if o.status in UNFINISHED][:20]
    return orders, checkouts


def order_for_user(user: User, reference: str) -> Order:
    """The shopper's own order; anyone else's is ORDER_NOT_FOUND (a 404)."""
    order = db.session.scalars(sa.select(Order).where(Order.reference == reference)).first()
    if order is None or order.user_id != user.id:
        raise TiffinError("ORDER_NOT_FOUND", f"order {reference!r} for user {user.id}")
    return order
