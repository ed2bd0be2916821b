"""The gateways' side of the payment model: what each gateway holds, and the network.

Each `*Side` plays one gateway against the real app: the test gateway's hosted
page (its own webhooks are lost on purpose, see conftest), FakeStripe and
FakeRazorpay. They change what the gateway holds and put the webhook copies the
gateway would send into `World.network`; the machine decides which copies arrive,
how often and in which order. `World.paid()` reads what the gateways hold as paid
straight from the fakes, so the invariants compare the shop with the gateways
themselves, not with a second bookkeeping of ours.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from app.extensions import db
from app.gateways import get_gateway
from app.gateways.test import SIGNATURE_HEADER
from app.models import Order
from tests.fakes.stripe import signed_headers
from tests.flows import return_params, start_checkout
from tests.razorpay.conftest import Shop as RazorpayShopper
from tests.razorpay.conftest import WEBHOOK_SECRET as RAZORPAY_WEBHOOK_SECRET
from tests.stripe.conftest import WEBHOOK_SECRET as STRIPE_WEBHOOK_SECRET

OPEN, PROCESSING, DECLINED, AUTHORIZED, PAID, EXPIRED = (
    "open", "processing", "declined", "authorized", "paid", "expired")


@dataclass
class Delivery:
    """One webhook the gateway sends; every copy carries the same event id."""

    gateway: str
    event_id: str
    event_type: str
    body: bytes
    headers: dict | None = None  # None: signed when sent (Stripe signs a timestamp)
    settles: tuple = ()          # (gateway, payment id) this event tells the shop was paid

    def __repr__(self) -> str:
        return f"<{self.gateway} {self.event_type} {self.event_id}>"


@dataclass
class Checkout:
    """One checkout a shopper started, as the gateway sees it."""

    shopper: int
    gateway: str
    slug: str
    reference: str
    gateway_order_id: str
    recurring: bool
    state: str = OPEN
    returns: list = field(default_factory=list)  # (method, path, data) the browser brings back
    payment_id: str | None = None                 # the gateway's payment, once there is one
    page: str | None = None                       # the test gateway's hosted page

    def __repr__(self) -> str:
        return f"<{self.gateway} {self.slug} {self.reference} {self.state}>"


def latest_order(app, user_id: int) -> tuple[str, str, str]:
    """(reference, gateway order id, kind) of the shopper's newest order."""
    with app.app_context():
        order = db.session.scalars(sa.select(Order).where(Order.user_id == user_id)
                                   .order_by(Order.id.desc())).first()
        return order.reference, order.gateway_order_id, order.kind


class TestSide:
    """The built-in test gateway: stateless in the app, so its payments are kept here."""

    name = "test"

    def __init__(self, world):
        self.world = world
        self.payments: dict[str, dict] = {}  # payment id -> {"amount", "refunded"} in minor

    def start(self, client, user_id, slug):
        response = start_checkout(client, slug, gateway="test")
        if response.status_code != 303:
            return response, None
        return response, self.checkout_from(response, user_id, slug)

    def checkout_from(self, response, user_id, slug) -> Checkout:
        """The checkout whose hosted page `response` sends the shopper to (their newest order)."""
        reference, gateway_order_id, kind = latest_order(self.world.app, user_id)
        return Checkout(0, "test", slug, reference, gateway_order_id, kind != "addon",
                        page=response.location)

    def _session(self, checkout):
        token = checkout.page.rsplit("/", 1)[1]
        with self.world.app.app_context():
            return get_gateway("test").load_session(token)

    def _event(self, checkout, event_type, **kw) -> Delivery:
        with self.world.app.app_context():
            gateway = get_gateway("test")
            body = gateway.build_event(self._session(checkout), event_type, **kw)
            headers = {SIGNATURE_HEADER: gateway.sign_body(body), "Content-Type": "application/json"}
        pid = kw.get("payment_id")
        return Delivery("test", json.loads(body)["id"], event_type, body, headers,
                        settles=(("test", pid),) if pid else ())

    def _hosted_page(self, client, checkout, **form) -> dict | None:
        """Submit the hosted page; the return's parameters, or None when the session expired."""
        r = client.post(checkout.page, data=form)
        if r.status_code == 410:
            checkout.state = EXPIRED
            return None
        assert r.status_code == 303, (r.status_code, r.text[:500])
        checkout.returns.append(("GET", r.location, None))
        return return_params(r.location)

    def pay(self, client, checkout):
        params = self._hosted_page(client, checkout, outcome="pay")
        if params is None:
            return
        checkout.payment_id = params["payment_id"]
        amount = self._session(checkout)["amount_minor"]
        self.payments[checkout.payment_id] = {"amount": amount, "refunded": 0}
        self.world.send(self._event(checkout, "payment.succeeded",
                                    payment_id=checkout.payment_id))
        checkout.state = PAID

    def decline(self, client, checkout):
        if self._hosted_page(client, checkout, outcome="decline", reason="card_declined") is None:
            return
        self.world.send(self._event(checkout, "payment.failed", reason="card_declined"))
        checkout.state = DECLINED

    def refunded_by_the_shop(self, payment_id, amount):
        self.payments[payment_id]["refunded"] += amount

    def time_out(self, client, checkout):
        checkout.state = EXPIRED  # the shopper closed the hosted page

    def can(self, action, checkout) -> bool:
        return checkout.state == OPEN and action in ("pay", "decline", "time_out")

    def paid(self) -> dict:
        return {pid: p["refunded"] for pid, p in self.payments.items()}

    def _full_amount(self, payment_id) -> int:
        return self.payments[payment_id]["amount"]


class StripeSide:
    """FakeStripe: sessions, subscriptions and invoices; refunds and disputes by event."""

    name = "stripe"

    def __init__(self, world, fake):
        self.world, self.fake = world, fake
        self.refunded: dict[str, int] = {}  # payment key (pi or invoice id) -> refunded minor

    def start(self, client, user_id, slug):
        response = start_checkout(client, slug, gateway="stripe")
        if response.status_code != 303:
            return response, None
        reference, gateway_order_id, kind = latest_order(self.world.app, user_id)
        return response, Checkout(0, "stripe", slug, reference, gateway_order_id, kind != "addon")

    def _event(self, type_, obj, settles=()) -> Delivery:
        event = self.fake.record_event(self.fake.event(type_, obj))
        return Delivery("stripe", event["id"], type_, json.dumps(event).encode(),
                        settles=tuple(("stripe", s) for s in settles))

    def _return(self, checkout):
        checkout.returns.append(("GET", f"/checkout/stripe/return?session_id="
                                        f"{checkout.gateway_order_id}", None))

    @staticmethod
    def key(session) -> str:
        """What our paid order records as the payment: the PaymentIntent or the first invoice."""
        return session["invoice"] if session["mode"] == "subscription" else session["payment_intent"]

    def pay(self, client, checkout):
        if checkout.state == PROCESSING:  # the bank confirms the async payment late
            session = self.fake.sessions[checkout.gateway_order_id]
            session["payment_status"] = "paid"
            self.world.send(self._event("checkout.session.async_payment_succeeded", session,
                                        (self.key(session),)))
        else:
            session = self.fake.complete_session(checkout.gateway_order_id)
            self.world.send(self._event("checkout.session.completed", session,
                                        (self.key(session),)))
            if session["mode"] == "subscription":
                self.world.send(self._event("invoice.paid", self.fake.invoices[session["invoice"]],
                                            (session["invoice"],)))
        checkout.payment_id = self.key(session)
        checkout.state = PAID
        self._return(checkout)

    def authorise_late(self, client, checkout):
        """An async payment method: the session completes unpaid, the bank decides later."""
        session = self.fake.complete_session(checkout.gateway_order_id, payment_status="unpaid")
        self.world.send(self._event("checkout.session.completed", session))
        checkout.state = PROCESSING
        self._return(checkout)

    def decline(self, client, checkout):
        session = self.fake.sessions[checkout.gateway_order_id]
        self.world.send(self._event("checkout.session.async_payment_failed", session))
        checkout.state = DECLINED

    def time_out(self, client, checkout):
        session = self.fake.sessions[checkout.gateway_order_id]
        session["status"] = "expired"
        self.world.send(self._event("checkout.session.expired", session))
        checkout.state = EXPIRED

    def can(self, action, checkout) -> bool:
        pay_mode = not checkout.recurring
        return {"pay": checkout.state in (OPEN, PROCESSING),
                "authorise_late": checkout.state == OPEN and pay_mode,
                "decline": checkout.state == PROCESSING,
                "time_out": checkout.state == OPEN}.get(action, False)

    # --- subscriptions ---------------------------------------------------------
    def billing(self) -> list[str]:
        return [sid for sid, s in self.fake.subscriptions.items()
                if s["status"] in ("active", "past_due")]

    def _amount(self, sub) -> int:
        return sub["items"]["data"][0]["price"]["unit_amount"]

    def renew(self, sub_id):
        sub = self.fake.subscriptions[sub_id]
        if sub["cancel_at_period_end"]:  # the period ends instead of renewing
            sub["status"] = "canceled"
            self.world.send(self._event("customer.subscription.deleted", sub))
            return
        # The period ends now and the next one starts (the machine renews whenever it
        # likes; moving the clock a month each time would expire everything else).
        item = sub["items"]["data"][0]
        item["current_period_start"] = int(time.time())
        item["current_period_end"] = item["current_period_start"] + 30 * 86400
        invoice = self.fake.invoice(sub_id, billing_reason="subscription_cycle",
                                    amount=self._amount(sub))
        self.fake.invoices[invoice["id"]] = invoice
        payment_intent = "pi_" + secrets.token_hex(12)
        self.fake.link_payment(invoice["id"], payment_intent)
        if hasattr(self.fake, "payments"):  # the fake keeps money it can refund
            self.fake.payments[payment_intent] = {"amount": invoice["amount_paid"],
                                                  "currency": invoice["currency"], "refunded": 0}
        sub.update(status="active", latest_invoice=invoice["id"])
        self.world.send(self._event("invoice.paid", invoice, (invoice["id"],)))

    def fail_renewal(self, sub_id):
        sub = self.fake.subscriptions[sub_id]
        invoice = self.fake.invoice(sub_id, billing_reason="subscription_cycle", status="open",
                                    amount=self._amount(sub))
        sub["status"] = "past_due"
        self.world.send(self._event("invoice.payment_failed", invoice))
        self.world.send(self._event("customer.subscription.updated", sub))

    def subscription_changed(self, sub_id):
        """After cancel, resume or a plan change the fake holds the new state; Stripe tells us."""
        sub = self.fake.subscriptions[sub_id]
        self.world.send(self._event("customer.subscription.deleted" if sub["status"] == "canceled"
                                    else "customer.subscription.updated", sub))

    # --- money back ---------------------------------------------------------------
    def paid(self) -> dict:
        keys = {self.key(s) for s in self.fake.sessions.values() if s["payment_status"] == "paid"}
        keys |= {i["id"] for i in self.fake.invoices.values()
                 if i["status"] == "paid" and i["billing_reason"] != "subscription_create"}
        return {k: self._refunded(k) for k in keys}

    def _payment_intent(self, key) -> str:
        if key.startswith("pi_"):
            return key
        return next(p["payment"]["payment_intent"] for p in self.fake.invoice_payments
                    if p["invoice"] == key)

    def _kept_by_fake(self, key) -> dict | None:
        """The fake's own record of a PaymentIntent's money, where it keeps one (refunds)."""
        return getattr(self.fake, "payments", {}).get(self._payment_intent(key))

    def _refunded(self, key) -> int:
        kept = self._kept_by_fake(key)
        return kept["refunded"] if kept is not None else self.refunded.get(key, 0)

    def refunded_by_the_shop(self, key, amount):
        """`flask orders refund` asked Stripe (the fake keeps the amount where it can);
        Stripe confirms it with charge.refunded."""
        if self._kept_by_fake(key) is None:
            self.refunded[key] = self.refunded.get(key, 0) + amount
        self._charge_refunded(key)

    def refund_at_gateway(self, key, amount):
        kept = self._kept_by_fake(key)
        if kept is not None:
            kept["refunded"] += amount
        else:
            self.refunded[key] = self.refunded.get(key, 0) + amount
        self._charge_refunded(key)

    def _charge_refunded(self, key):
        charge = self.fake.charge(payment_intent=self._payment_intent(key),
                                  amount=self._full_amount(key), amount_refunded=self._refunded(key))
        self.world.send(self._event("charge.refunded", charge))

    def dispute(self, key):
        total = self._full_amount(key)
        pi = self._payment_intent(key)
        charge = self.fake.charge(payment_intent=pi, amount=total)
        self.world.send(self._event("charge.dispute.created", self.fake.dispute(
            payment_intent=pi, charge=charge["id"], amount=total)))

    def _full_amount(self, key) -> int:
        if key in self.fake.invoices:
            return self.fake.invoices[key]["amount_paid"]
        return next(s["amount_total"] for s in self.fake.sessions.values()
                    if s["payment_intent"] == key)


class RazorpaySide:
    """FakeRazorpay: orders for packs, subscriptions for plans, refunds and disputes."""

    name = "razorpay"

    def __init__(self, world, fake):
        self.world, self.fake = world, fake

    def start(self, client, user_id, slug):
        response = RazorpayShopper(client, self.fake).checkout_page(slug)
        if response.status_code != 200:
            return response, None
        gateway_id = re.search(r'data-(?:order|subscription)-id="([^"]+)"', response.text).group(1)
        reference, gateway_order_id, _ = latest_order(self.world.app, user_id)
        assert gateway_order_id == gateway_id
        return response, Checkout(0, "razorpay", slug, reference, gateway_id,
                                  gateway_id.startswith("sub_"))

    def _event(self, event, settles=(), **entities) -> Delivery:
        body, headers = self.fake.webhook(event, secret=RAZORPAY_WEBHOOK_SECRET,
                                          **{k: json.loads(json.dumps(v))
                                             for k, v in entities.items()})
        return Delivery("razorpay", headers["X-Razorpay-Event-Id"], event, body, headers,
                        settles=tuple(("razorpay", s) for s in settles))

    def _callback(self, checkout, payment):
        gid = checkout.gateway_order_id
        if checkout.recurring:
            data = {"order_id": gid, "razorpay_subscription_id": gid,
                    "razorpay_payment_id": payment["id"],
                    "razorpay_signature": self.fake.subscription_signature(payment["id"], gid)}
        else:
            data = {"order_id": gid, "razorpay_order_id": gid,
                    "razorpay_payment_id": payment["id"],
                    "razorpay_signature": self.fake.checkout_signature(gid, payment["id"])}
        checkout.returns.append(("POST", "/payments/razorpay/verify", data))

    def pay(self, client, checkout):
        gid = checkout.gateway_order_id
        if checkout.recurring:
            payment = self.fake.charge_subscription(gid)
            self.world.send(self._event("subscription.charged", (payment["id"],),
                                        subscription=self.fake.subscriptions[gid],
                                        payment=payment))
            self.world.send(self._event("payment.captured", payment=payment))
        else:  # also a late capture after a failed attempt (UPI)
            payment = self.fake.pay_order(gid)
            self.world.send(self._event("payment.captured", (payment["id"],), payment=payment))
            self.world.send(self._event("order.paid", (payment["id"],), payment=payment,
                                        order=self.fake.orders[gid]))
        checkout.payment_id = payment["id"]
        checkout.state = PAID
        self._callback(checkout, payment)

    def authorise_late(self, client, checkout):
        """Authorised, not captured: the shop captures it on the callback or the webhook."""
        payment = self.fake.pay_order(checkout.gateway_order_id, status="authorized")
        self.world.send(self._event("payment.authorized", (payment["id"],), payment=payment))
        checkout.payment_id = payment["id"]
        checkout.state = AUTHORIZED
        self._callback(checkout, payment)

    def decline(self, client, checkout):
        payment = self.fake.fail_payment(checkout.gateway_order_id)
        self.world.send(self._event("payment.failed", payment=payment))
        checkout.state = DECLINED

    def time_out(self, client, checkout):
        checkout.state = EXPIRED

    def can(self, action, checkout) -> bool:
        if checkout.recurring:
            return action in ("pay", "time_out") and checkout.state == OPEN
        return {"pay": checkout.state in (OPEN, DECLINED),
                "authorise_late": checkout.state in (OPEN, DECLINED),
                "decline": checkout.state == OPEN,
                "time_out": checkout.state == OPEN}.get(action, False)

    # --- subscriptions ---------------------------------------------------------
    def billing(self) -> list[str]:
        return [sid for sid, s in self.fake.subscriptions.items()
                if s["status"] in ("active", "pending")]

    def renew(self, sub_id):
        sub = self.fake.subscriptions[sub_id]
        if sub["has_scheduled_changes"]:  # cancelled at cycle end: the cycle ends
            self.fake.set_subscription_status(sub_id, "cancelled")
            self.world.send(self._event("subscription.cancelled", subscription=sub))
            return
        payment = self.fake.charge_subscription(sub_id)
        self.world.send(self._event("subscription.charged", (payment["id"],), subscription=sub,
                                    payment=payment))

    def fail_renewal(self, sub_id):
        sub = self.fake.set_subscription_status(sub_id, "pending")
        self.world.send(self._event("subscription.pending", subscription=sub))

    def subscription_changed(self, sub_id):
        sub = self.fake.subscriptions[sub_id]
        if sub["status"] == "cancelled":
            self.world.send(self._event("subscription.cancelled", subscription=sub))

    # --- money back ---------------------------------------------------------------
    def paid(self) -> dict:
        return {p["id"]: p["amount_refunded"] for p in self.fake.payments.values()
                if p["status"] in ("captured", "refunded")}

    def refund_at_gateway(self, payment_id, amount):
        refund = self.fake.refund_outside(payment_id, amount)
        self.world.send(self._event("refund.processed", refund=refund,
                                    payment=self.fake.payments[payment_id]))

    def refunded_by_the_shop(self, payment_id, amount):
        """`flask orders refund` asked for it (the fake keeps the amount); Razorpay
        confirms it by webhook too."""
        refund = [r for r in self.fake.refunds.values() if r["payment_id"] == payment_id][-1]
        self.world.send(self._event("refund.processed", refund=refund,
                                    payment=self.fake.payments[payment_id]))

    def dispute(self, payment_id):
        payment = self.fake.payments[payment_id]
        self.world.send(self._event("payment.dispute.created", dispute=self.fake.dispute(
            payment_id), payment=payment))

    def _full_amount(self, payment_id) -> int:
        return self.fake.payments[payment_id]["amount"]


class World:
    """The three gateways and the webhook copies on their way to the shop."""

    def __init__(self, app, stripe_fake, razorpay_fake):
        self.app = app
        self.sides = {"test": TestSide(self), "stripe": StripeSide(self, stripe_fake),
                      "razorpay": RazorpaySide(self, razorpay_fake)}
        self.network: list[Delivery] = []

    def send(self, delivery: Delivery) -> None:
        self.network.append(delivery)

    def side(self, gateway: str):
        return self.sides[gateway]

    def paid(self) -> dict[tuple[str, str], int]:
        """Every payment a gateway holds as paid: (gateway, payment id) -> refunded minor."""
        return {(name, pid): refunded for name, side in self.sides.items()
                for pid, refunded in side.paid().items()}

    def full_amount(self, gateway: str, payment_id: str) -> int | None:
        side = self.sides[gateway]
        return side._full_amount(payment_id) if hasattr(side, "_full_amount") else None

    def deliver(self, client, delivery: Delivery):
        headers = delivery.headers or signed_headers(delivery.body, STRIPE_WEBHOOK_SECRET)
        return client.post(f"/webhooks/{delivery.gateway}", data=delivery.body, headers=headers)

