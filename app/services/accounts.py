"""Shopper accounts."""
from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import User
from app.services import audit


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


def authenticate(email: str, password: str) -> User | None:
    user = db.session.scalars(sa.select(User).where(User.email == normalise_email(email))).first()
    if user is None or user.deleted_at is not None or not user.check_password(password):
        return None
    return user
