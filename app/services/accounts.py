"""Shopper accounts."""
from __future__ import annotations

import secrets
from functools import lru_cache

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.gateways import get_gateway
from app.models import NotificationOutbox, Subscription, User
from app.models.ops import OUTBOX_PENDING
from app.models.subscription import SUB_CANCELED
from app.models.types import utcnow
from app.services import audit, credits
from app.services.fulfilment import live_subscription


class EmailTaken(ValueError):
    pass


def normalise_email(email: str) -> str:
    return email.strip().lower()


def register_user(email: str, name: str, password: str) -> User:
    email = normalise_email(email)
    if db.session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise EmailTaken(email)
    user = User(email=email, name=name.strip())
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.flush()
        audit.record(f"user:{user.id}", "user_registered", "user", user.id, user_id=user.id)
        db.session.commit()
    except sa.exc.IntegrityError as exc:
        db.session.rollback()
        raise EmailTaken(email) from exc
    return user


DEMO_SHOPPER_EMAIL = "demo@tiffin.example"
DEMO_SHOPPER_PASSWORD = "tiffin-demo-1"


def ensure_demo_shopper() -> User:
    """The development demo shopper (`flask seed --demo`): created if missing, and
    its password set back to the printed one so the printed sign-in always works."""
    user = db.session.scalars(sa.select(User).where(User.email == DEMO_SHOPPER_EMAIL)).first()
    if user is not None and user.check_password(DEMO_SHOPPER_PASSWORD):
        return user
    if user is None:
        user = User(email=DEMO_SHOPPER_EMAIL, name="Demo Shopper")
        db.session.add(user)
    user.set_password(DEMO_SHOPPER_PASSWORD)
    db.session.flush()
    audit.record("cli:seed", "demo_shopper_seeded", "user", user.id, user_id=user.id)
    db.session.commit()
    return user


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    return generate_password_hash("decoy password, never set on an account")


def authenticate(email: str, password: str) -> User | None:
    user = db.session.scalars(sa.select(User).where(User.email == normalise_email(email))).first()
    if user is None or user.deleted_at is not None:
        # Hash anyway, so an unknown email answers as slowly as a wrong password and
        # timing does not tell which addresses have accounts.
        check_password_hash(_decoy_hash(), password)
        return None
    return user if user.check_password(password) else None


def delete_account(user: User, password: str) -> User:
    """Delete a shopper's account: cancel the gateway subscription first, then
    remove personal data and keep orders (and the audit log) for the books.

    The gateway is asked before anything changes here: if it cannot cancel
    (TiffinError GATEWAY_UNAVAILABLE), nothing is deleted and billing never
    continues for an account that no longer exists.

    Raises:
        WrongPassword when `password` is not the account's password.
        TiffinError GATEWAY_UNAVAILABLE when the gateway could not cancel.
    """
    if not user.check_password(password):
        raise WrongPassword(user.id)
    live = live_subscription(user.id)
    if live is not None and live.gateway_subscription_id:
        get_gateway(live.gateway).cancel_subscription_now(live)

    now = utcnow()
    user = db.session.scalars(sa.select(User).where(User.id == user.id).with_for_update()
                              .execution_options(populate_existing=True)).one()
    for subscription in db.session.scalars(sa.select(Subscription).where(
            Subscription.user_id == user.id).with_for_update()).all():
        if subscription.is_live:
            subscription.status = SUB_CANCELED
            subscription.canceled_at = now
        if subscription.access_revoked_at is None:
            subscription.access_revoked_at = now
            subscription.revoke_reason = "account_deleted"
        subscription.cancel_at_period_end = False
        subscription.grace_period_ends_at = None
    credits.revoke_plan_credits(user.id, reason="account_deleted",
                                source_key=f"account_deleted:{user.id}")
    # Unsent emails carry the address; sent ones are history and keep only the row.
    db.session.execute(sa.delete(NotificationOutbox).where(
        NotificationOutbox.user_id == user.id, NotificationOutbox.status == OUTBOX_PENDING))
    db.session.execute(sa.update(NotificationOutbox).where(NotificationOutbox.user_id == user.id)
                       .values(to_email=f"deleted-{user.id}@deleted.invalid", body_text=""))
    user.email = f"deleted-{user.id}@deleted.invalid"
    user.name = "Deleted user"
    user.set_password(secrets.token_urlsafe(32))  # nobody knows it: the account cannot sign in
    user.stripe_customer_id = None
    user.razorpay_customer_id = None
    user.subscription_status = SUB_CANCELED if live is not None else user.subscription_status
    user.deleted_at = now
    audit.record(f"user:{user.id}", "account_deleted", "user", user.id, user_id=user.id,
                 canceled_gateway_subscription=live.gateway_subscription_id if live else None)
    db.session.commit()
    return user


class WrongPassword(ValueError):
    pass


class UnknownUser(LookupError):
    """No account has this email."""


def set_role(email: str, role: str, *, actor: str) -> tuple[User, str]:
    """Give the account `email` the role `role`; returns the user and its previous role.

    One transaction with an audit entry (before and after). Raises UnknownUser.
    """
    user = db.session.scalars(sa.select(User).where(User.email == normalise_email(email))
                              .with_for_update()).first()
    if user is None or user.deleted_at is not None:
        db.session.rollback()
        raise UnknownUser(email)
    before = user.role
    if before != role:
        user.role = role
        audit.record(actor, "role_changed", "user", user.id, user_id=user.id,
                     before={"role": before}, after={"role": role})
    db.session.commit()
    return user, before


DEMO_OPERATOR_EMAIL = "operator@tiffin.example"
DEMO_OPERATOR_PASSWORD = "tiffin-operator-demo"


def ensure_demo_operator() -> tuple[str, str]:
    """Create (or restore) the development demo operator; returns its email and password.

    Callers check the environment first: a known password must never exist in production.
    """
    user = db.session.scalars(sa.select(User).where(User.email == DEMO_OPERATOR_EMAIL)).first()
    if user is None:
        user = User(email=DEMO_OPERATOR_EMAIL, name="Demo Operator")
        db.session.add(user)
    before = user.role
    user.set_password(DEMO_OPERATOR_PASSWORD)
    user.role = "operator"
    db.session.flush()
    audit.record("cli:seed", "role_changed", "user", user.id, user_id=user.id,
                 before={"role": before}, after={"role": "operator"}, demo=True)
    db.session.commit()
    return DEMO_OPERATOR_EMAIL, DEMO_OPERATOR_PASSWORD
