"""Whether a subscription gives access right now: decided in this one place."""
from __future__ import annotations

from datetime import datetime

from app.models.subscription import (SUB_ACTIVE, SUB_CANCELED, SUB_PAST_DUE, SUB_TRIALING,
                                     Subscription)
from app.models.types import utcnow


def has_access(subscription: Subscription | None, now: datetime | None = None) -> bool:
    """Active or trialing; past_due within its grace period; canceled but paid up
    to the period end. Revoked (refund, dispute, deleted customer) never."""
    if subscription is None or subscription.access_revoked_at is not None:
        return False
    now = now or utcnow()
    if subscription.status in (SUB_ACTIVE, SUB_TRIALING):
        return True
    if subscription.status == SUB_PAST_DUE:
        ends = subscription.grace_period_ends_at
        return ends is not None and now < ends
    if subscription.status == SUB_CANCELED:
        return subscription.current_period_end is not None and now < subscription.current_period_end
    return False
