"""A local Razorpay API for tests, answering the real `razorpay` SDK over HTTP.

No fake Razorpay server exists on PyPI or npm, so this is one: a catch-all
pytest-httpserver handler for the `/v1/...` paths the SDK calls, keeping
orders, payments, refunds, subscriptions, plans and invoices in memory and
answering with JSON shaped like Razorpay's documented entities
(https://razorpay.com/docs/api/). It checks the key id and secret on every
request (HTTP basic auth, as Razorpay does) and answers errors the way Razorpay
does: `{"error": {"code": "BAD_REQUEST_ERROR", "description": …}}`.

The test plays the shopper's browser and Razorpay's side with the helpers:
`pay_order` / `fail_payment` / `charge_subscription` create payments as
Checkout would, `checkout_signature` / `subscription_signature` sign the
callback, and `webhook` builds a signed webhook body with its headers.

Usage (pytest-httpserver's `httpserver` fixture is cleared after each test):

    fake = FakeRazorpay(httpserver, key_id="rzp_test_x", key_secret="secret")
    app = make_app(RAZORPAY_API_BASE=fake.base_url, ...)
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time

from werkzeug.wrappers import Response

ACCOUNT_ID = "acc_TiffinFake0001"
PERIOD_SECONDS = {"daily": 86400, "weekly": 7 * 86400, "monthly": 30 * 86400,
                  "yearly": 365 * 86400}


def new_id(prefix: str) -> str:
    """An id shaped like Razorpay's: a prefix and 14 base62-ish characters."""
    return prefix + "_" + secrets.token_urlsafe(11).replace("-", "A").replace("_", "B")[:14]


def hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def collection(items: list) -> dict:
    return {"entity": "collection", "count": len(items), "items": items}


class FakeRazorpay:
    def __init__(self, httpserver, *, key_id: str, key_secret: str):
        self.server = httpserver
        self.key_id, self.key_secret = key_id, key_secret
        self.lock = threading.RLock()  # helpers may be called under it (bench senders)
        self.orders: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.plans: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.refund_keys: dict[str, str] = {}   # X-Refund-Idempotency -> refund id
        self.requests: list[dict] = []          # every request: method, path, headers, json
        self.fail_captures = False               # capture answers a 500 (Razorpay unavailable)
        self.refund_status = "processed"         # or "pending" (processed later by webhook)
        self.payment_notes: dict = {}            # notes Checkout adds to payments
        httpserver.expect_request(re.compile(r"^/v1/.*")).respond_with_handler(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def calls(self, method: str, pattern: str) -> list[dict]:
        """The requests made to paths matching `pattern` (a regex) with `method`."""
        return [r for r in self.requests if r["method"] == method and re.fullmatch(pattern, r["path"])]

    # --- HTTP --------------------------------------------------------------------
    def _handle(self, request) -> Response:
        body = request.get_json(silent=True) if request.data else None
        with self.lock:
            self.requests.append({"method": request.method, "path": request.path,
                                  "headers": dict(request.headers), "json": body,
                                  "args": request.args.to_dict()})
            if not self._authorised(request.headers.get("Authorization", "")):
                return self._error(401, "The api key provided is invalid")
            for method, pattern, action in self._routes():
                match = re.fullmatch(pattern, request.path)
                if match and request.method == method:
                    return action(request, body or {}, *match.groups())
            return self._error(400, "The requested URL was not found on the server.")

    def _routes(self):
        return [
            ("POST", r"/v1/orders", self._create_order),
            ("GET", r"/v1/orders", lambda r, b: self._list(self.orders, r)),
            ("GET", r"/v1/orders/([^/]+)", lambda r, b, i: self._fetch(self.orders, i)),
            ("GET", r"/v1/orders/([^/]+)/payments", self._order_payments),
            ("GET", r"/v1/payments", lambda r, b: self._list(self.payments, r)),
            ("GET", r"/v1/payments/([^/]+)", lambda r, b, i: self._fetch(self.payments, i)),
            ("POST", r"/v1/payments/([^/]+)/capture", self._capture),
            ("POST", r"/v1/payments/([^/]+)/refund", self._refund),
            ("GET", r"/v1/refunds/([^/]+)", lambda r, b, i: self._fetch(self.refunds, i)),
            ("POST", r"/v1/subscriptions", self._create_subscription),
            ("GET", r"/v1/subscriptions", lambda r, b: self._list(self.subscriptions, r)),
            ("GET", r"/v1/subscriptions/([^/]+)",
             lambda r, b, i: self._fetch(self.subscriptions, i)),
            ("POST", r"/v1/subscriptions/([^/]+)/cancel", self._cancel_subscription),
            ("PATCH", r"/v1/subscriptions/([^/]+)", self._edit_subscription),
            ("POST", r"/v1/plans", self._create_plan),
            ("GET", r"/v1/plans", lambda r, b: self._list(self.plans, r)),
            ("GET", r"/v1/plans/([^/]+)", lambda r, b, i: self._fetch(self.plans, i)),
            ("GET", r"/v1/invoices/([^/]+)", lambda r, b, i: self._fetch(self.invoices, i)),
        ]

    def _authorised(self, header: str) -> bool:
        expected = base64.b64encode(f"{self.key_id}:{self.key_secret}".encode()).decode()
        return header == f"Basic {expected}"

    @staticmethod
    def _json(obj, status: int = 200) -> Response:
        return Response(json.dumps(obj), status=status, content_type="application/json")

    def _error(self, status: int, description: str, code: str = "BAD_REQUEST_ERROR") -> Response:
        return self._json({"error": {"code": code, "description": description, "source": "business",
                                     "step": "payment_initiation",
                                     "reason": "input_validation_failed", "metadata": {}}}, status)

    def _fetch(self, store: dict, entity_id: str) -> Response:
        if entity_id not in store:
            return self._error(400, "The id provided does not exist")
        return self._json(store[entity_id])

    def _list(self, store: dict, request) -> Response:
        items = sorted(store.values(), key=lambda e: e["created_at"], reverse=True)
        since = request.args.get("from")
        if since:
            items = [e for e in items if e["created_at"] >= int(since)]
        skip, count = int(request.args.get("skip", 0)), int(request.args.get("count", 10))
        return self._json(collection(items[skip:skip + count]))

    def _create_order(self, request, body) -> Response:
        if not isinstance(body.get("amount"), int) or body["amount"] < 100:
            return self._error(400, "The amount must be atleast INR 1.00")
        order = {"id": new_id("order"), "entity": "order", "amount": body["amount"],
                 "amount_paid": 0, "amount_due": body["amount"], "currency": body["currency"],
                 "receipt": body.get("receipt"), "offer_id": None, "status": "created",
                 "attempts": 0, "notes": body.get("notes") or [], "created_at": int(time.time())}
        self.orders[order["id"]] = order
        return self._json(order)

    def _order_payments(self, request, body, order_id) -> Response:
        if order_id not in self.orders:
            return self._error(400, "The id provided does not exist")
        return self._json(collection([p for p in self.payments.values()
                                      if p["order_id"] == order_id]))

    def _capture(self, request, body, payment_id) -> Response:
        payment = self.payments.get(payment_id)
        if payment is None:
            return self._error(400, "The id provided does not exist")
        if self.fail_captures:
            return self._error(500, "We are facing some trouble completing your request at the "
                                    "moment. Please try again shortly.", code="SERVER_ERROR")
        if payment["status"] != "authorized":
            return self._error(400, "This payment has already been captured")
        if body.get("amount") != payment["amount"]:
            return self._error(400, "Capture amount must be equal to the amount authorized")
        payment.update(status="captured", captured=True)
        self._mark_order_paid(payment)
        return self._json(payment)

    def _refund(self, request, body, payment_id) -> Response:
        payment = self.payments.get(payment_id)
        if payment is None:
            return self._error(400, "The id provided does not exist")
        key = request.headers.get("X-Refund-Idempotency")
        if key and key in self.refund_keys:
            return self._json(self.refunds[self.refund_keys[key]])
        amount = body.get("amount") or payment["amount"] - payment["amount_refunded"]
        if payment["status"] not in ("captured", "refunded") or \
                amount > payment["amount"] - payment["amount_refunded"]:
            return self._error(400, "The refund amount provided is greater than amount captured")
        refund = self._new_refund(payment, amount, status=self.refund_status,
                                  notes=body.get("notes") or [])
        if key:
            self.refund_keys[key] = refund["id"]
        return self._json(refund)

    def _create_subscription(self, request, body) -> Response:
        plan = self.plans.get(body.get("plan_id"))
        if plan is None:
            return self._error(400, "The id provided does not exist")
        total = int(body.get("total_count") or 0)
        sub = {"id": new_id("sub"), "entity": "subscription", "plan_id": plan["id"],
               "customer_id": None, "status": "created", "current_start": None,
               "current_end": None, "ended_at": None, "quantity": body.get("quantity", 1),
               "notes": body.get("notes") or [], "charge_at": None, "start_at": None,
               "end_at": None, "auth_attempts": 0, "total_count": total, "paid_count": 0,
               "customer_notify": bool(body.get("customer_notify", 1)),
               "created_at": int(time.time()), "expire_by": body.get("expire_by"),
               "short_url": "https://rzp.io/i/" + secrets.token_hex(4),
               "has_scheduled_changes": False, "change_scheduled_at": None, "source": "api",
               "payment_method": None, "offer_id": None, "remaining_count": total}
        self.subscriptions[sub["id"]] = sub
        return self._json(sub)

    def _cancel_subscription(self, request, body, sub_id) -> Response:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return self._error(400, "The id provided does not exist")
        if body.get("cancel_at_cycle_end") in (1, True, "1"):
            sub.update(has_scheduled_changes=True, change_scheduled_at=sub["current_end"])
        else:
            sub.update(status="cancelled", ended_at=int(time.time()))
        return self._json(sub)

    def _edit_subscription(self, request, body, sub_id) -> Response:
        sub = self.subscriptions.get(sub_id)
        if sub is None or body.get("plan_id") not in self.plans:
            return self._error(400, "The id provided does not exist")
        if body.get("schedule_change_at") == "cycle_end":
            # Razorpay keeps the plan until the cycle ends; the next charge is on the new one.
            sub.update(has_scheduled_changes=True, change_scheduled_at=sub["current_end"],
                       scheduled_plan_id=body["plan_id"])
        else:
            sub["plan_id"] = body["plan_id"]
        return self._json(sub)

    def _create_plan(self, request, body) -> Response:
        item = body.get("item") or {}
        if body.get("period") not in PERIOD_SECONDS or not isinstance(item.get("amount"), int):
            return self._error(400, "The period field is invalid")
        now = int(time.time())
        plan = {"id": new_id("plan"), "entity": "plan", "interval": int(body.get("interval", 1)),
                "period": body["period"],
                "item": {"id": new_id("item"), "active": True, "name": item.get("name"),
                         "description": item.get("description"), "amount": item["amount"],
                         "unit_amount": item["amount"], "currency": item.get("currency", "INR"),
                         "type": "plan", "unit": None, "tax_inclusive": False, "hsn_code": None,
                         "sac_code": None, "tax_rate": None, "tax_id": None,
                         "tax_group_id": None, "created_at": now, "updated_at": now},
                "notes": body.get("notes") or [], "created_at": now}
        self.plans[plan["id"]] = plan
        return self._json(plan)

    # --- Razorpay's side, driven by the test -------------------------------------------
    def _new_payment(self, *, amount: int, currency: str, order_id: str | None, status: str,
                     invoice_id: str | None = None, method: str = "upi", error=None) -> dict:
        payment = {
            "id": new_id("pay"), "entity": "payment", "amount": amount, "currency": currency,
            "status": status, "order_id": order_id, "invoice_id": invoice_id,
            "international": False, "method": method, "amount_refunded": 0,
            "refund_status": None, "captured": status == "captured",
            "description": "Tiffin meal plan", "card_id": None, "bank": None, "wallet": None,
            "vpa": "success@razorpay" if method == "upi" else None,
            "email": "asha@example.com", "contact": "+919000090000", "customer_id": None,
            "token_id": None, "notes": dict(self.payment_notes) or [],
            "fee": None if status != "captured" else amount * 2 // 100,
            "tax": None if status != "captured" else amount * 2 // 100 * 18 // 118,
            "error_code": None, "error_description": None, "error_source": None,
            "error_step": None, "error_reason": None,
            "acquirer_data": {"rrn": str(secrets.randbelow(10 ** 12)).zfill(12)},
            "created_at": int(time.time())}
        if error:
            code, description = error
            payment.update(error_code=code, error_description=description,
                           error_source="customer", error_step="payment_authorization",
                           error_reason="payment_failed")
        self.payments[payment["id"]] = payment
        return payment

    def _mark_order_paid(self, payment: dict) -> None:
        order = self.orders.get(payment["order_id"])
        if order is not None:
            order.update(status="paid", amount_paid=payment["amount"], amount_due=0)

    def _new_refund(self, payment: dict, amount: int, *, status: str, notes) -> dict:
        refund = {"id": new_id("rfnd"), "entity": "refund", "amount": amount,
                  "currency": payment["currency"], "payment_id": payment["id"], "notes": notes,
                  "receipt": None, "acquirer_data": {"arn": None}, "created_at": int(time.time()),
                  "batch_id": None, "status": status, "speed_processed": "normal",
                  "speed_requested": "normal"}
        self.refunds[refund["id"]] = refund
        payment["amount_refunded"] += amount
        full = payment["amount_refunded"] >= payment["amount"]
        payment.update(refund_status="full" if full else "partial",
                       status="refunded" if full else payment["status"])
        return refund

    def pay_order(self, order_id: str, *, status: str = "captured", amount: int | None = None,
                  method: str = "upi") -> dict:
        """What Checkout does when the shopper pays: a payment for the order."""
        with self.lock:
            order = self.orders[order_id]
            order["attempts"] += 1
            order["status"] = "attempted"
            payment = self._new_payment(amount=order["amount"] if amount is None else amount,
                                        currency=order["currency"], order_id=order_id,
                                        status=status, method=method)
            if status == "captured":
                self._mark_order_paid(payment)
            return payment

    def fail_payment(self, order_id: str, *, code: str = "BAD_REQUEST_ERROR",
                     description: str = "Payment failed because the UPI PIN entered was incorrect."
                     ) -> dict:
        """A failed attempt on the order (payment.failed)."""
        with self.lock:
            order = self.orders[order_id]
            order.update(attempts=order["attempts"] + 1, status="attempted")
            return self._new_payment(amount=order["amount"], currency=order["currency"],
                                     order_id=order_id, status="failed",
                                     error=(code, description))

    def charge_subscription(self, sub_id: str, *, amount: int | None = None) -> dict:
        """One subscription charge: Razorpay's invoice, its order and a captured payment;
        the subscription moves to its next period (the first charge activates it)."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            if sub.get("scheduled_plan_id") and sub["current_end"]:
                sub.update(plan_id=sub.pop("scheduled_plan_id"), has_scheduled_changes=False,
                           change_scheduled_at=None)
            plan = self.plans[sub["plan_id"]]
            amount = plan["item"]["amount"] if amount is None else amount
            start = sub["current_end"] or int(time.time())
            end = start + PERIOD_SECONDS[plan["period"]] * plan["interval"]
            order = {"id": new_id("order"), "entity": "order", "amount": amount,
                     "amount_paid": amount, "amount_due": 0, "currency": plan["item"]["currency"],
                     "receipt": None, "offer_id": None, "status": "paid", "attempts": 1,
                     "notes": [], "created_at": int(time.time())}
            self.orders[order["id"]] = order
            invoice_id = new_id("inv")
            payment = self._new_payment(amount=amount, currency=order["currency"],
                                        order_id=order["id"], status="captured",
                                        invoice_id=invoice_id, method="card")
            self.invoices[invoice_id] = {
                "id": invoice_id, "entity": "invoice", "type": "invoice",
                "subscription_id": sub_id, "order_id": order["id"], "payment_id": payment["id"],
                "customer_id": sub["customer_id"], "status": "paid", "amount": amount,
                "amount_paid": amount, "amount_due": 0, "currency": order["currency"],
                "billing_start": start, "billing_end": end, "paid_at": int(time.time()),
                "created_at": int(time.time())}
            sub.update(status="active", current_start=start, current_end=end, charge_at=end,
                       paid_count=sub["paid_count"] + 1,
                       remaining_count=sub["total_count"] - sub["paid_count"] - 1,
                       customer_id=sub["customer_id"] or new_id("cust"))
            return payment

    def set_subscription_status(self, sub_id: str, status: str) -> dict:
        with self.lock:
            sub = self.subscriptions[sub_id]
            sub["status"] = status
            if status in ("cancelled", "completed"):
                sub["ended_at"] = int(time.time())
            return sub

    def refund_outside(self, payment_id: str, amount: int) -> dict:
        """A refund made in Razorpay's dashboard (only the webhook tells Tiffin)."""
        with self.lock:
            return self._new_refund(self.payments[payment_id], amount, status="processed",
                                    notes=[])

    def dispute(self, payment_id: str) -> dict:
        with self.lock:
            payment = self.payments[payment_id]
            return {"id": new_id("disp"), "entity": "dispute", "payment_id": payment_id,
                    "amount": payment["amount"], "currency": payment["currency"],
                    "amount_deducted": 0, "reason_code": "chargeback",
                    "respond_by": int(time.time()) + 7 * 86400, "status": "open",
                    "phase": "chargeback", "created_at": int(time.time())}

    # --- signatures and webhooks ----------------------------------------------------
    def checkout_signature(self, order_id: str, payment_id: str) -> str:
        """What Checkout's handler receives: HMAC(order_id|payment_id, key secret)."""
        return hmac_hex(self.key_secret, f"{order_id}|{payment_id}")

    def subscription_signature(self, payment_id: str, sub_id: str) -> str:
        """For a subscription: HMAC(payment_id|subscription_id, key secret)."""
        return hmac_hex(self.key_secret, f"{payment_id}|{sub_id}")

    @staticmethod
    def webhook(event: str, *, secret: str, event_id: str | None = None,
                created_at: int | None = None, **entities) -> tuple[bytes, dict]:
        """A webhook delivery as Razorpay sends it: the body and its headers.

        `entities` are payment=, order=, refund=, subscription=, dispute= dicts;
        each goes under payload.<name>.entity, and `contains` lists their names.
        """
        body = json.dumps({
            "entity": "event", "account_id": ACCOUNT_ID, "event": event,
            "contains": [name for name, e in entities.items() if e is not None],
            "payload": {name: {"entity": e} for name, e in entities.items() if e is not None},
            "created_at": created_at or int(time.time())}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json",
                   "X-Razorpay-Signature": hmac_hex(secret, body.decode()),
                   "X-Razorpay-Event-Id": event_id or "evt_" + secrets.token_hex(7)}
        return body, headers
