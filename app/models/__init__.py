"""What the data is. Models never commit; services own the transaction."""
from app.models.catalogue import PLAN_KIND_ADDON, PLAN_KIND_SUBSCRIPTION, MealPlan
from app.models.ledger import BUCKET_ADDON, BUCKET_PLAN, AuditLogEntry, CreditLedgerEntry
from app.models.ops import JobLock, MonitorAlert, MonitorRun, NotificationOutbox
from app.models.order import Order
from app.models.subscription import LIVE_STATUSES, Subscription
from app.models.test_gateway import TestGatewayPayment
from app.models.types import utcnow
from app.models.user import User
from app.models.webhook import WebhookDeliveryAttempt, WebhookEvent

__all__ = [
    "AuditLogEntry", "BUCKET_ADDON", "BUCKET_PLAN", "CreditLedgerEntry", "JobLock", "LIVE_STATUSES",
    "MealPlan", "MonitorAlert", "MonitorRun", "NotificationOutbox", "Order", "PLAN_KIND_ADDON",
    "PLAN_KIND_SUBSCRIPTION", "Subscription", "TestGatewayPayment", "User", "WebhookDeliveryAttempt", "WebhookEvent", "utcnow",
]
