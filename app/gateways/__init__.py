"""Gateway registry: a name -> class map and one lookup function.

This package is the only place the stripe and razorpay SDKs are imported.
"""
from __future__ import annotations

from flask import current_app

from app.config import enabled_gateways
from app.errors import TiffinError
from app.gateways.base import PaymentGateway
from app.gateways.razorpay import RazorpayGateway
from app.gateways.stripe import StripeGateway
from app.gateways.test import TestGateway

GATEWAY_CLASSES: dict[str, type[PaymentGateway]] = {
    TestGateway.name: TestGateway,
    RazorpayGateway.name: RazorpayGateway,
    StripeGateway.name: StripeGateway,
}
# Gateways that bill subscriptions themselves: our copy of one must carry their id.
GATEWAY_BILLED = tuple(sorted(n for n, c in GATEWAY_CLASSES.items() if c.bills_subscriptions))


def available_gateways() -> list[str]:
    """Names of the gateways this deployment has configured and implemented."""
    return [n for n in enabled_gateways(current_app.config) if n in GATEWAY_CLASSES]


def gateway_label(name: str) -> str:
    """The name shoppers know a gateway by ("Stripe", "Razorpay", "Test payment")."""
    cls = GATEWAY_CLASSES.get(name)
    return cls.display_name if cls is not None else name.replace("_", " ").capitalize()


def gateway_method_hint(name: str) -> str:
    cls = GATEWAY_CLASSES.get(name)
    return cls.method_hint if cls is not None else ""


def get_gateway(name: str) -> PaymentGateway:
    """The configured gateway called `name`, or GATEWAY_NOT_CONFIGURED."""
    if name not in available_gateways():
        raise TiffinError("GATEWAY_NOT_CONFIGURED", f"gateway {name!r} is not enabled")
    cache = current_app.extensions.setdefault("tiffin_gateways", {})
    if name not in cache:
        cache[name] = GATEWAY_CLASSES[name](current_app.config)
    return cache[name]


def recorded_subscription_id(order) -> str | None:
    """The gateway subscription id an order recorded, read without asking the gateway."""
    cls = GATEWAY_CLASSES.get(order.gateway)
    return cls.recorded_subscription_id(order) if cls is not None else None
