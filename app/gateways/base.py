"""The one small interface every payment gateway implements.

A gateway knows how to start a checkout, how to verify what comes back to the
return/callback route, and how to verify and parse a webhook. It never touches
the database: services take what it returns and decide what to change.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
import json
from typing import Mapping

from app.errors import TiffinError

# PaymentResult.status values
PAID = "paid"                  # money taken; safe to fulfil
PENDING = "pending"            # may still succeed (processing, gateway unreachable)
DECLINED = "declined"          # the issuer said no
NOT_COMPLETED = "not_completed"  # shopper left, session expired, nothing taken


@dataclass
class CheckoutStart:
    """How to send the shopper on: a redirect, or a page of ours (e.g. checkout.js)."""

    gateway_order_id: str
    redirect_url: str | None = None
    template: str | None = None
    context: dict = field(default_factory=dict)
    # When the gateway closes this checkout, if it differs from what we asked for
    # (Stripe clamps a session's lifetime to 30 min - 24 h).
    expires_at: datetime | None = None


@dataclass
class PaymentResult:
    """What the gateway says about one payment, after its signature was verified."""

    status: str
    gateway_order_id: str
    gateway_payment_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    metadata_user_id: int | None = None
    metadata_plan_id: int | None = None
    order_reference: str | None = None
    gateway_customer_id: str | None = None
    gateway_subscription_id: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    refunded_minor: int = 0
    created_at: datetime | None = None
    raw: dict = field(default_factory=dict)


# PlanChangeQuote.timing values
CHANGE_NOW = "now"                      # applied at once (Stripe bills any difference later)
CHANGE_AFTER_PAYMENT = "after_payment"  # the difference is paid first, then the plan changes
CHANGE_AT_CYCLE_END = "cycle_end"       # the gateway switches plans when the period ends


@dataclass
class PlanChangeQuote:
    """What a plan change costs and when it takes effect, as the gateway bills it."""

    timing: str
    currency: str
    charge_now_minor: int = 0        # paid before the change applies (CHANGE_AFTER_PAYMENT)
    # Stripe: the prorations added to the next invoice (negative: a credit) and that
    # invoice's total; Razorpay: the new plan's price, charged at `effective_at`.
    next_invoice_minor: int | None = None
    next_invoice_total_minor: int | None = None
    next_invoice_at: datetime | None = None
    effective_at: datetime | None = None  # None: as soon as it is confirmed (or paid)
    proration_date: int | None = None     # Stripe: the instant the preview prorated at


@dataclass
class RemoteSubscription:
    """The gateway's current view of one subscription it bills."""

    id: str
    status: str  # already mapped to our statuses
    customer_id: str | None
    price_id: str | None
    metadata_plan_id: int | None
    cancel_at_period_end: bool
    period_start: datetime | None
    period_end: datetime | None


@dataclass
class GatewayEvent:
    """A webhook whose signature checked out, ready to be stored."""

    event_id: str
    event_type: str
    payload: dict
    created_at: datetime | None = None
    livemode: bool | None = None


def webhook_json_object(body: bytes | str, gateway: str) -> dict:
    """A verified webhook body as the JSON object every gateway documents.

    Valid JSON that is not an object (an array, a string, a number, null) is refused
    like invalid JSON: handlers index into it, and a signature proves only who sent it.
    Raises TiffinError(WEBHOOK_PAYLOAD_INVALID).
    """
    try:
        payload = json.loads(body)
    except ValueError as exc:  # includes a body that is not UTF-8
        raise TiffinError("WEBHOOK_PAYLOAD_INVALID", f"{gateway} body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise TiffinError("WEBHOOK_PAYLOAD_INVALID",
                          f"{gateway} body is JSON {type(payload).__name__}, not an object")
    return payload


class PaymentGateway(ABC):
    """Implemented once per gateway; looked up by name in app.gateways.registry."""

    name: str = ""
    display_name: str = ""  # what shoppers call it, shown on order pages
    method_hint: str = ""   # how one pays with it, shown beside the name at checkout
    # Return/callback fields naming a gateway session that `verify_return` asks about;
    # each must be the order's own stored id (the return's order is refused otherwise).
    return_session_fields: tuple[str, ...] = ()
    # True for gateways that keep a subscription of their own and charge its renewals
    # (Stripe, Razorpay): our copy must carry its id, or their webhooks cannot find it.
    bills_subscriptions: bool = False

    def __init__(self, config: Mapping):
        self.config = config

    @abstractmethod
    def start_checkout(self, *, order, plan, user) -> CheckoutStart:
        """Create the gateway-side order/session for a pending order.

        Raises TiffinError(GATEWAY_UNAVAILABLE) when the gateway cannot be reached.
        """

    @abstractmethod
    def verify_return(self, params: Mapping, *, order=None) -> PaymentResult:
        """Verify the redirect or callback the shopper's browser brought back.

        Raises TiffinError(PAYMENT_SIGNATURE_INVALID | PAYMENT_SESSION_NOT_FOUND);
        returns status PENDING (never a failure) when the gateway cannot be reached.
        """

    @abstractmethod
    def parse_webhook(self, body: bytes, headers: Mapping) -> GatewayEvent:
        """Verify the signature over the raw body, then parse it.

        Raises TiffinError(PAYMENT_SIGNATURE_INVALID | WEBHOOK_PAYLOAD_INVALID).
        """

    def lookup_payment(self, order) -> PaymentResult:
        """Ask the gateway where one pending order's payment stands (the pending page's
        check): PAID with what was paid, PENDING while it is processing or authorised,
        DECLINED, or NOT_COMPLETED while nothing was paid (open, left or expired).

        Raises TiffinError(GATEWAY_UNAVAILABLE) when the gateway cannot be asked.
        """
        raise TiffinError("GATEWAY_UNAVAILABLE", f"{self.name} has no API to ask about one order")

    def list_recent_payments(self, since: datetime) -> list[PaymentResult]:
        """Every checkout/payment the gateway knows of since `since`, newest first,
        for the reconcile backstop. Gateways without an API to ask return []."""
        return []

    # --- the gateway's own subscription behind a plan order (repair tool) ------
    @classmethod
    def recorded_subscription_id(cls, order) -> str | None:
        """The gateway subscription id a plan order recorded when it was paid, if any."""
        return (order.gateway_data or {}).get("gateway_subscription_id")

    def subscription_for_order(self, order, *, known_id: str | None = None
                               ) -> RemoteSubscription | None:
        """Ask the gateway (one request) which subscription this paid plan order
        started and how it stands; `known_id` when the order recorded it.

        None when the gateway bills no subscription for it. Raises
        TiffinError(GATEWAY_UNAVAILABLE) when the gateway cannot be asked.
        """
        return None

    # Account actions. Gateways that bill on their side (Stripe, Razorpay) override
    # these to change the remote subscription first; the test gateway has no
    # remote state, so the local change is all there is.
    def cancel_subscription_at_period_end(self, subscription) -> None:
        return None

    def resume_subscription(self, subscription) -> None:
        return None

    def quote_plan_change(self, subscription, new_plan, *, proration_date: int | None = None
                          ) -> PlanChangeQuote:
        """What moving `subscription` to `new_plan` costs and when it applies.

        Gateways that bill on their side override this. Here the shop bills:
        a dearer plan costs the full difference between the two prices, paid
        before its credits apply (prorating would make a late-period upgrade
        nearly free while the new plan's meals arrive in full); a cheaper one
        applies at once and refunds nothing.
        """
        difference = new_plan.price_minor - subscription.meal_plan.price_minor
        if difference > 0:
            return PlanChangeQuote(timing=CHANGE_AFTER_PAYMENT, currency=new_plan.currency,
                                   charge_now_minor=difference)
        return PlanChangeQuote(timing=CHANGE_NOW, currency=new_plan.currency)

    def change_subscription_plan(self, subscription, new_plan, *,
                                 proration_date: int | None = None) -> None:
        return None

    def cancel_subscription_now(self, subscription) -> None:
        return None
