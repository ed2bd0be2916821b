"""Webhook handlers: one small function per gateway event type, in a dict.

A handler takes the stored WebhookEvent and returns "processed" or "ignored".
Handlers *sync* state through the services, so replaying an event is harmless.
"""
from __future__ import annotations

from app.models.webhook import EVENT_IGNORED
from app.webhooks.handlers import razorpay as razorpay_handlers
from app.webhooks.handlers import stripe as stripe_handlers
from app.webhooks.handlers import test as test_handlers

HANDLERS: dict[str, dict] = {
    "test": test_handlers.HANDLERS,
    "razorpay": razorpay_handlers.HANDLERS,
    "stripe": stripe_handlers.HANDLERS,
}


def dispatch(event) -> str:
    handler = HANDLERS.get(event.gateway, {}).get(event.event_type)
    if handler is None:
        return EVENT_IGNORED
    return handler(event)
