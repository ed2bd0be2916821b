"""Meal credits. Each change writes a ledger row whose unique `source_key`
makes a grant for one payment impossible to apply twice; balances change with
a single UPDATE ... SET x = x + n so concurrent purchases never lose meals."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from app.extensions import db
from app.models import BUCKET_ADDON, BUCKET_PLAN, CreditLedgerEntry, User
from app.models.types import utcnow
from app.services.sql import DriverStatement, insert_unless_exists


_USERS = User.__table__
_UPDATE_USER = DriverStatement(sa.update(_USERS).where(_USERS.c.id == sa.bindparam("p_user_id")))


def set_user_columns(user_id: int, **values) -> None:
    """One UPDATE of a user's row (balances, subscription status) in the caller's
    transaction, on the driver: fulfilment runs it for every payment."""
    _UPDATE_USER.execute({"p_user_id": user_id, **values})


def already_applied(source_key: str) -> bool:
    return db.session.scalar(sa.select(sa.literal(True)).where(
        CreditLedgerEntry.source_key == source_key)) is not None


def _apply(user_id: int, column, bucket: str, new_balance, *, reason: str, source_key: str,
           subscription_id=None, order_id=None, balance_before: int | None = None,
           **user_values) -> bool:
    """Change one bucket to `new_balance(current)` and write its ledger row; True if
    applied, False if the ledger already holds this `source_key`.

    A caller holding the user's row lock (fulfilment.lock_user) passes the balance
    it read under that lock as `balance_before`: the ledger row is then written
    first (skipped if already there) and the balance set to the figure it records.
    `user_values` are other user columns to set in the same UPDATE.
    """
    entry = dict(user_id=user_id, subscription_id=subscription_id, order_id=order_id,
                 bucket=bucket, reason=reason, source_key=source_key, created_at=utcnow())
    ledger = CreditLedgerEntry.__table__
    if balance_before is not None:
        after = new_balance(balance_before)
        written = insert_unless_exists(ledger, "source_key").execute(
            {**entry, "delta": after - balance_before, "balance_after": after}).scalar()
        if written is None:
            return False
        set_user_columns(user_id, **{column.key: after, **user_values})
    else:
        if already_applied(source_key):
            return False
        before = db.session.execute(sa.select(column).where(User.id == user_id)).scalar_one()
        # One UPDATE … SET x = f(x): concurrent changes to the balance are never lost.
        after = db.session.execute(
            sa.update(_USERS).where(_USERS.c.id == user_id)
            .values({column.key: new_balance(_USERS.c[column.key]), **user_values})
            .returning(_USERS.c[column.key])).scalar_one()
        db.session.execute(sa.insert(ledger), {**entry, "delta": after - before,
                                               "balance_after": after})
    # Keep a loaded User in step without another SELECT (emails read the balance).
    user = db.session.identity_map.get(identity_key(User, user_id))
    if user is not None:
        for key, value in {column.key: after, **user_values}.items():
            set_committed_value(user, key, value)
    return True


def reset_plan_credits(user_id: int, meals: int, *, reason: str, source_key: str,
                       subscription_id=None, order_id=None, **apply_options):
    """Set the plan bucket to `meals` (new subscription, renewal, plan change)."""
    return _apply(user_id, User.plan_meal_credits, BUCKET_PLAN, lambda _: max(meals, 0), reason=reason,
                  source_key=source_key, subscription_id=subscription_id, order_id=order_id,
                  **apply_options)


def add_addon_credits(user_id: int, meals: int, *, reason: str, source_key: str, order_id=None,
                      **apply_options):
    """Add an add-on pack's meals atomically; they carry over between periods."""
    return _apply(user_id, User.addon_meal_credits, BUCKET_ADDON, lambda current: current + meals,
                  reason=reason, source_key=source_key, order_id=order_id, **apply_options)


def revoke_plan_credits(user_id: int, *, reason: str, source_key: str, subscription_id=None,
                        order_id=None):
    """Take the plan bucket to zero when access ends (refund, dispute, deleted customer)."""
    return _apply(user_id, User.plan_meal_credits, BUCKET_PLAN, lambda _: 0, reason=reason,
                  source_key=source_key, subscription_id=subscription_id, order_id=order_id)
