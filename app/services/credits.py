"""Meal credits. Each change writes a ledger row whose unique `source_key`
makes a grant for one payment impossible to apply twice; balances change with
a single UPDATE ... SET x = x + n so concurrent purchases never lose meals."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from app.extensions import db
from app.models import BUCKET_ADDON, BUCKET_PLAN, CreditLedgerEntry, User


def already_applied(source_key: str) -> bool:
    return db.session.scalar(sa.select(sa.literal(True)).where(
        CreditLedgerEntry.source_key == source_key)) is not None


def _apply(user_id: int, column, bucket: str, new_value_expr, *, reason: str, source_key: str,
           subscription_id=None, order_id=None) -> CreditLedgerEntry | None:
    if already_applied(source_key):
        return None
    before = db.session.execute(sa.select(column).where(User.id == user_id)).scalar_one()
    after = db.session.execute(
        sa.update(User).where(User.id == user_id).values({column.key: new_value_expr})
        .returning(column).execution_options(synchronize_session=False)).scalar_one()
    entry = CreditLedgerEntry(user_id=user_id, subscription_id=subscription_id, order_id=order_id,
                              bucket=bucket, delta=after - before, balance_after=after,
                              reason=reason, source_key=source_key)
    db.session.add(entry)
    # Keep a loaded User in step without another SELECT (emails read the balance).
    user = db.session.identity_map.get(identity_key(User, user_id))
    if user is not None:
        set_committed_value(user, column.key, after)
    return entry


def reset_plan_credits(user_id: int, meals: int, *, reason: str, source_key: str,
                       subscription_id=None, order_id=None):
    """Set the plan bucket to `meals` (new subscription, renewal, plan change)."""
    return _apply(user_id, User.plan_meal_credits, BUCKET_PLAN, max(meals, 0), reason=reason,
                  source_key=source_key, subscription_id=subscription_id, order_id=order_id)


def add_addon_credits(user_id: int, meals: int, *, reason: str, source_key: str, order_id=None):
    """Add an add-on pack's meals atomically; they carry over between periods."""
    return _apply(user_id, User.addon_meal_credits, BUCKET_ADDON, User.addon_meal_credits + meals,
                  reason=reason, source_key=source_key, order_id=order_id)


def revoke_plan_credits(user_id: int, *, reason: str, source_key: str, subscription_id=None,
                        order_id=None):
    """Take the plan bucket to zero when access ends (refund, dispute, deleted customer)."""
    return _apply(user_id, User.plan_meal_credits, BUCKET_PLAN, 0, reason=reason,
                  source_key=source_key, subscription_id=subscription_id, order_id=order_id)
