"""A local Stripe for tests: what localstripe does not serve, answered over HTTP.

`FakeStripe` runs on pytest-httpserver and answers the real SDK's requests for
Checkout Sessions (create, retrieve with `expand[]`, list), Subscriptions (retrieve, update,
cancel), invoice previews of a price change (`POST /v1/invoices/create_preview`),
Invoice Payments (list), Prices and Products, with objects shaped like
Stripe's documented ones in the 2025-03-31 "basil" API (a subscription's period
on `items.data[]`, an invoice's subscription under `parent.subscription_details`).
It honours `Idempotency-Key` like Stripe. Test helpers complete a session the
way a shopper paying would, and build events and signed webhook requests.
One lock guards the state, so a threaded server (several app workers calling
at once, as in bench/storm.py) and the test's own helpers can share it.

`localstripe_server` (see tests/stripe/conftest.py) is the localstripe process
for what it does serve (customers, payment intents, refunds).
"""
from __future__ import annotations

import json
import re
import secrets
import threading
import time
from typing import Any

import stripe
from werkzeug import Request, Response

API_VERSION = "2025-03-31.basil"


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def parse_form(items) -> dict:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict = {}
    for key, value in items:
        parts = re.findall(r"[^\[\]]+", key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_index = not last and parts[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append({} if not nxt_is_index else [])
                if last:
                    node[idx] = value
                else:
                    if not isinstance(node[idx], (dict, list)):
                        node[idx] = [] if nxt_is_index else {}
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if nxt_is_index else {})
    return root


def _error(status: int, message: str, *, code: str = "resource_missing",
           type_: str = "invalid_request_error") -> Response:
    return Response(json.dumps({"error": {"type": type_, "code": code, "message": message}}),
                    status=status, content_type="application/json")


def _json(obj, status: int = 200) -> Response:
    return Response(json.dumps(obj), status=status, content_type="application/json",
                    headers={"Stripe-Version": API_VERSION, "Request-Id": _id("req")})


def _list(url: str, data: list) -> dict:
    return {"object": "list", "url": url, "has_more": False, "data": data}


class FakeStripe:
    """State and handlers of the fake; `requests` records (method, path, params, headers)."""

    def __init__(self, httpserver, *, livemode: bool = False):
        self.server = httpserver
        self.livemode = livemode
        self.sessions: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoice_payments: list[dict] = []
        self.events: list[dict] = []  # what GET /v1/events lists (see record_event)
        self.invoices: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.products: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}  # PaymentIntent id -> {"amount", "currency", "refunded"}
        self.refunds: dict[str, dict] = {}
        self.refund_status = "succeeded"  # what a new refund reports ("pending" for bank refunds)
        self.requests: list[tuple[str, str, dict, dict]] = []
        self._idempotent: dict[str, tuple[str, dict]] = {}
        self.lock = threading.RLock()
        httpserver.expect_request(re.compile(r"^/v1/.*")).respond_with_handler(self.handle)

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    # --- HTTP ---------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        params = parse_form(list(request.form.items(multi=True)) + list(request.args.items(multi=True)))
        with self.lock:
            return self._handle(request, params)

    def _handle(self, request: Request, params: dict) -> Response:
        self.requests.append((request.method, request.path, params, dict(request.headers)))
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key:
            if key in self._idempotent:
                # Like Stripe: the first response again, or an error for other parameters.
                path, first_params, body = self._idempotent[key]
                return _json(body) if (path, first_params) == (request.path, params) else _error(
                    400, "Keys for idempotent requests can only be used with the same parameters",
                    code="idempotency_key_in_use")
        response = self.route(request.method, request.path, params)
        if request.method == "POST" and key and response.status_code == 200:
            self._idempotent[key] = (request.path, params, json.loads(response.get_data()))
        return response

    def route(self, method: str, path: str, params: dict) -> Response:
        m = re.fullmatch(r"/v1/checkout/sessions(?:/([^/]+))?", path)
        if m:
            if method == "POST" and not m.group(1):
                if self._expires_at(params) is None:
                    return _error(400, "The `expires_at` timestamp must be between 30 minutes "
                                  "and 24 hours from Checkout Session creation.",
                                  code="parameter_invalid_integer")
                return _json(self.create_session(params))
            if method == "GET" and m.group(1):
                s = self.sessions.get(m.group(1))
                if s is None:
                    return _error(404, f"No such checkout.session: '{m.group(1)}'")
                return _json(self.expand(s, params.get("expand") or []))
            if method == "GET":
                return _json(self.list_sessions(params))
        m = re.fullmatch(r"/v1/subscriptions/([^/]+)", path)
        if m:
            sub = self.subscriptions.get(m.group(1))
            if sub is None:
                return _error(404, f"No such subscription: '{m.group(1)}'")
            if method == "GET":
                return _json(sub)
            if method == "POST":
                return _json(self.update_subscription(sub, params))
            if method == "DELETE":
                sub["status"] = "canceled"
                sub["canceled_at"] = sub["ended_at"] = int(time.time())
                return _json(sub)
        if path == "/v1/invoices/create_preview" and method == "POST":
            return self.create_preview(params)
        m = re.fullmatch(r"/v1/invoices/([^/]+)", path)
        if m and method == "GET":
            invoice = self.invoices.get(m.group(1))
            return _json(invoice) if invoice else _error(404, f"No such invoice: '{m.group(1)}'")
        if path == "/v1/events" and method == "GET":
            return _json(self.list_events(params))
        if path == "/v1/invoice_payments" and method == "GET":
            pi = (params.get("payment") or {}).get("payment_intent")
            return _json(_list(path, [p for p in self.invoice_payments
                                      if p["payment"]["payment_intent"] == pi
                                      or p["invoice"] == params.get("invoice")]))
        if path == "/v1/refunds" and method == "POST":
            return self.create_refund(params)
        if path == "/v1/prices":
            if method == "GET":
                keys = params.get("lookup_keys") or []
                return _json(_list(path, [p for p in self.prices.values()
                                          if p["lookup_key"] in keys]))
            if method == "POST":
                return _json(self.create_price(params))
        m = re.fullmatch(r"/v1/products(?:/([^/]+))?", path)
        if m:
            if method == "GET" and m.group(1):
                p = self.products.get(m.group(1))
                return _json(p) if p else _error(404, f"No such product: '{m.group(1)}'")
            if method == "POST" and not m.group(1):
                return _json(self.create_product(params))
        return _error(404, f"Unrecognized request URL ({method}: {path}).", code="")

    # --- objects --------------------------------------------------------------
    def create_session(self, params: dict) -> dict:
        sid = "cs_test_" + secrets.token_hex(16)
        item = params["line_items"][0]
        if "price" in item:
            price = self.prices.get(item["price"])
            amount, currency = (price["unit_amount"], price["currency"]) if price else (None, None)
        else:
            amount, currency = int(item["price_data"]["unit_amount"]), item["price_data"]["currency"]
        session = {
            "id": sid, "object": "checkout.session", "mode": params["mode"],
            "status": "open", "payment_status": "unpaid",
            "amount_subtotal": amount, "amount_total": amount, "currency": currency,
            "client_reference_id": params.get("client_reference_id"),
            "customer": params.get("customer"),
            "customer_email": params.get("customer_email"),
            "metadata": params.get("metadata") or {},
            "success_url": params["success_url"], "cancel_url": params["cancel_url"],
            "url": f"https://checkout.stripe.com/c/pay/{sid}",
            "created": int(time.time()), "expires_at": self._expires_at(params),
            "livemode": self.livemode, "payment_intent": None, "subscription": None,
            "invoice": None, "line_items_spec": params["line_items"],
            "subscription_data_metadata": (params.get("subscription_data") or {}).get("metadata"),
        }
        self.sessions[sid] = session
        return session

    @staticmethod
    def _expires_at(params: dict) -> int | None:
        """Stripe refuses an expires_at outside 30 minutes to 24 hours from now (None)."""
        now = int(time.time())
        if params.get("expires_at") in (None, ""):
            return now + 86400
        expires_at = int(params["expires_at"])
        return expires_at if now + 1800 <= expires_at <= now + 86400 else None

    def expand(self, obj: dict, fields: list) -> dict:
        """Stripe's `expand[]`: the named id fields replaced by their objects."""
        found = {"subscription": self.subscriptions, "invoice": self.invoices}
        expanded = dict(obj)
        for name in fields:
            if isinstance(expanded.get(name), str) and expanded[name] in found.get(name, {}):
                expanded[name] = found[name][expanded[name]]
        return expanded

    def list_sessions(self, params: dict) -> dict:
        data = sorted(self.sessions.values(), key=lambda s: s["created"], reverse=True)
        gte = (params.get("created") or {}).get("gte")
        if gte is not None:
            data = [s for s in data if s["created"] >= int(gte)]
        if params.get("subscription"):
            data = [s for s in data if s["subscription"] == params["subscription"]]
        if params.get("payment_intent"):
            data = [s for s in data if s["payment_intent"] == params["payment_intent"]]
        return _list("/v1/checkout/sessions", data[: int(params.get("limit") or 10)])

    def list_events(self, params: dict) -> dict:
        data = sorted(self.events, key=lambda e: e["created"], reverse=True)
        if params.get("type"):
            data = [e for e in data if e["type"] == params["type"]]
        gte = (params.get("created") or {}).get("gte")
        if gte is not None:
            data = [e for e in data if e["created"] >= int(gte)]
        return _list("/v1/events", data[: int(params.get("limit") or 10)])

    def record_event(self, event: dict) -> dict:
        """Keep an event in the Events API (whether or not its webhook is delivered)."""
        with self.lock:
            self.events.append(event)
        return event

    def create_preview(self, params: dict) -> Response:
        """POST /v1/invoices/create_preview for a price change of a subscription: the
        upcoming invoice with Stripe's proration lines (unused time on the old price,
        remaining time on the new, `parent.subscription_item_details.proration`
        true) and the next period on the new price, prorated by the second at
        `subscription_details.proration_date` (default: now)."""
        sub = self.subscriptions.get(params.get("subscription") or "")
        if sub is None:
            return _error(404, f"No such subscription: '{params.get('subscription')}'")
        details = params.get("subscription_details") or {}
        changes = {c["id"]: c for c in details.get("items") or []}
        item = sub["items"]["data"][0]
        change = changes.get(item["id"])
        if change is None or (change.get("price") and change["price"] not in self.prices):
            return _error(400, "Invalid subscription_details[items]", code="parameter_invalid")
        start, end = item["current_period_start"], item["current_period_end"]
        at = int(details.get("proration_date") or time.time())
        if not start <= at <= end:
            return _error(400, "proration_date must be within the current period",
                          code="parameter_invalid")
        old, new = item["price"], self.price_object(change.get("price") or item["price"]["id"])
        prorate = details.get("proration_behavior", "create_prorations") != "none"
        share = (end - at) / (end - start)
        lines = []
        if prorate and old["id"] != new["id"]:
            lines.append(self._preview_line(sub, item, old, -round(old["unit_amount"] * share),
                                             at, end, proration=True, what="Unused time on"))
            lines.append(self._preview_line(sub, item, new, round(new["unit_amount"] * share),
                                             at, end, proration=True, what="Remaining time on"))
        next_end = end + (end - start)
        lines.append(self._preview_line(sub, item, new, new["unit_amount"], end, next_end,
                                        proration=False, what="1 × subscription"))
        total = sum(line["amount"] for line in lines)
        invoice = {
            "id": "upcoming_" + _id("in"), "object": "invoice", "billing_reason": "upcoming",
            "customer": sub["customer"], "currency": new["currency"], "status": "draft",
            "subtotal": total, "total": total, "amount_due": max(total, 0), "amount_paid": 0,
            "amount_remaining": max(total, 0), "livemode": self.livemode,
            "created": int(time.time()), "period_start": start, "period_end": end,
            "next_payment_attempt": end,
            "parent": {"type": "subscription_details", "quote_details": None,
                       "subscription_details": {"subscription": sub["id"],
                                                "metadata": sub["metadata"]}},
            "lines": _list("/v1/invoices/upcoming/lines", lines),
        }
        return _json(invoice)

    @staticmethod
    def _preview_line(sub, item, price, amount, start, end, *, proration, what) -> dict:
        return {"id": _id("il_tmp"), "object": "line_item", "amount": amount,
                "currency": price["currency"], "description": f"{what} {price['id']}",
                "period": {"start": start, "end": end}, "quantity": 1,
                "pricing": {"type": "price_details", "price_details": {
                    "price": price["id"], "product": price.get("product")}},
                "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                           "subscription_item_details": {
                               "invoice_item": _id("ii") if proration else None,
                               "proration": proration, "subscription": sub["id"],
                               "subscription_item": item["id"],
                               "proration_details": {"credited_items": None}}}}

    def update_subscription(self, sub: dict, params: dict) -> dict:
        if "cancel_at_period_end" in params:
            sub["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
        if "metadata" in params:
            sub["metadata"].update(params["metadata"])
        for change in params.get("items") or []:
            item = next(i for i in sub["items"]["data"] if i["id"] == change["id"])
            item["price"] = self.price_object(change["price"])
        if params.get("proration_behavior"):
            sub["last_proration_behavior"] = params["proration_behavior"]
        if params.get("proration_date"):
            sub["last_proration_date"] = int(params["proration_date"])
        return sub

    def price_object(self, price_id: str) -> dict:
        return self.prices.get(price_id) or {"id": price_id, "object": "price", "active": True,
                                             "currency": "inr", "unit_amount": None,
                                             "recurring": {"interval": "month", "interval_count": 1}}

    def create_price(self, params: dict) -> dict:
        price = {"id": _id("price"), "object": "price", "active": True,
                 "product": params["product"], "unit_amount": int(params["unit_amount"]),
                 "currency": params["currency"], "lookup_key": params.get("lookup_key"),
                 "metadata": params.get("metadata") or {}, "type": "recurring"
                 if params.get("recurring") else "one_time", "livemode": self.livemode,
                 "recurring": ({"interval": params["recurring"]["interval"],
                                "interval_count": int(params["recurring"].get("interval_count", 1))}
                               if params.get("recurring") else None)}
        self.prices[price["id"]] = price
        return price

    def create_product(self, params: dict) -> dict:
        product = {"id": params.get("id") or _id("prod"), "object": "product", "active": True,
                   "name": params["name"], "metadata": params.get("metadata") or {},
                   "livemode": self.livemode}
        self.products[product["id"]] = product
        return product

    # --- test helpers ---------------------------------------------------------
    def add_price(self, price_id: str, amount: int, currency: str = "inr", interval="month"):
        self.prices[price_id] = {"id": price_id, "object": "price", "active": True,
                                 "unit_amount": amount, "currency": currency,
                                 "lookup_key": None, "product": "prod_x",
                                 "recurring": {"interval": interval, "interval_count": 1}
                                 if interval else None}
        return self.prices[price_id]

    def complete_session(self, session_id: str, *, payment_status: str = "paid",
                         period_days: int = 30) -> dict:
        """What Stripe does when the shopper pays: the session completes, and in
        subscription mode a customer, a subscription and its first invoice appear."""
        with self.lock:
            return self._complete_session(session_id, payment_status, period_days)

    def _complete_session(self, session_id: str, payment_status: str, period_days: int) -> dict:
        s = self.sessions[session_id]
        s["status"] = "complete"
        s["payment_status"] = payment_status
        s["customer"] = s["customer"] or _id("cus")
        if s["mode"] == "subscription":
            now = int(time.time())
            spec = s["line_items_spec"][0]
            price = (self.price_object(spec["price"]) if "price" in spec else
                     {"id": _id("price"), "object": "price", "unit_amount": s["amount_total"],
                      "currency": s["currency"], "recurring": spec["price_data"].get("recurring")})
            sub = self.make_subscription(customer=s["customer"], price=price, start=now,
                                         end=now + period_days * 86400,
                                         metadata=s["subscription_data_metadata"] or {})
            s["subscription"] = sub["id"]
            s["invoice"] = _id("in")
            sub["latest_invoice"] = s["invoice"]
            self.invoices[s["invoice"]] = self.invoice(
                sub["id"], billing_reason="subscription_create", amount=s["amount_total"],
                currency=s["currency"], invoice_id=s["invoice"])
            self.link_payment(s["invoice"], _id("pi"))
            self.payments[self.invoice_payments[-1]["payment"]["payment_intent"]] = {
                "amount": s["amount_total"], "currency": s["currency"], "refunded": 0}
        else:
            s["payment_intent"] = _id("pi")
            self.payments[s["payment_intent"]] = {"amount": s["amount_total"],
                                                  "currency": s["currency"], "refunded": 0}
        return s

    def create_refund(self, params: dict) -> Response:
        """POST /v1/refunds for a PaymentIntent: refuses more than is left, like Stripe."""
        payment = self.payments.get(params.get("payment_intent") or "")
        if payment is None:
            return _error(404, f"No such payment_intent: '{params.get('payment_intent')}'")
        left = payment["amount"] - payment["refunded"]
        amount = int(params.get("amount") or left)
        if left <= 0:
            return _error(400, "Charge has already been refunded.",
                          code="charge_already_refunded")
        if amount > left:
            return _error(400, f"Refund amount ({amount}) is greater than unrefunded amount "
                          f"on charge ({left})", code="amount_too_large")
        if self.refund_status == "succeeded":
            payment["refunded"] += amount
        refund = {"id": _id("re"), "object": "refund", "amount": amount,
                  "currency": payment["currency"], "payment_intent": params["payment_intent"],
                  "charge": _id("ch"), "status": self.refund_status,
                  "metadata": params.get("metadata") or {}, "created": int(time.time())}
        self.refunds[refund["id"]] = refund
        return _json(refund)

    def settle_refund(self, refund_id: str) -> dict:
        """A pending refund goes through at the bank."""
        with self.lock:
            refund = self.refunds[refund_id]
            if refund["status"] != "succeeded":
                refund["status"] = "succeeded"
                self.payments[refund["payment_intent"]]["refunded"] += refund["amount"]
            return refund

    def refunded_charge(self, payment_intent: str) -> dict:
        """The charge of a PaymentIntent as `charge.refunded` carries it (cumulative refunds)."""
        payment = self.payments[payment_intent]
        return self.charge(payment_intent=payment_intent, amount=payment["amount"],
                           amount_refunded=payment["refunded"], currency=payment["currency"])

    def make_subscription(self, *, customer: str, price: dict, start: int, end: int,
                          metadata: dict | None = None, status: str = "active") -> dict:
        sid = _id("sub")
        sub = {
            "id": sid, "object": "subscription", "status": status, "customer": customer,
            "cancel_at_period_end": False, "cancel_at": None, "canceled_at": None,
            "ended_at": None, "created": start, "start_date": start, "livemode": self.livemode,
            "metadata": dict(metadata or {}), "latest_invoice": None,
            "billing_cycle_anchor": start, "collection_method": "charge_automatically",
            "items": {"object": "list", "has_more": False,
                      "url": f"/v1/subscription_items?subscription={sid}",
                      "data": [{"id": _id("si"), "object": "subscription_item", "price": price,
                                "quantity": 1, "subscription": sid,
                                "current_period_start": start, "current_period_end": end}]},
        }
        self.subscriptions[sid] = sub
        return sub

    def link_payment(self, invoice_id: str, payment_intent_id: str) -> None:
        self.invoice_payments.append({
            "id": _id("inpay"), "object": "invoice_payment", "invoice": invoice_id,
            "is_default": True, "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": payment_intent_id}})

    def advance_period(self, subscription_id: str, days: int = 30) -> tuple[int, int]:
        """Move a subscription into its next period (what a renewal does at Stripe)."""
        item = self.subscriptions[subscription_id]["items"]["data"][0]
        item["current_period_start"] = item["current_period_end"]
        item["current_period_end"] += days * 86400
        return item["current_period_start"], item["current_period_end"]

    # --- objects for events ---------------------------------------------------
    def invoice(self, subscription_id: str, *, billing_reason: str, amount: int,
                currency: str = "inr", status: str = "paid", attempt_count: int = 1,
                invoice_id: str | None = None) -> dict:
        sub = self.subscriptions[subscription_id]
        item = sub["items"]["data"][0]
        iid = invoice_id or _id("in")
        paid = status == "paid"
        return {
            "id": iid, "object": "invoice", "billing_reason": billing_reason,
            "customer": sub["customer"], "currency": currency, "status": status,
            "amount_due": amount, "amount_paid": amount if paid else 0,
            "amount_remaining": 0 if paid else amount, "attempt_count": attempt_count,
            "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_test/{iid}",
            "livemode": self.livemode, "created": int(time.time()),
            "parent": {"type": "subscription_details", "quote_details": None,
                       "subscription_details": {"subscription": subscription_id,
                                                "metadata": sub["metadata"]}},
            "lines": {"object": "list", "has_more": False, "data": [{
                "id": _id("il"), "object": "line_item", "amount": amount, "currency": currency,
                "period": {"start": item["current_period_start"],
                           "end": item["current_period_end"]}}]},
        }

    def charge(self, *, payment_intent: str, amount: int, amount_refunded: int = 0,
               currency: str = "inr", customer: str | None = None) -> dict:
        cid = _id("ch")
        refunds = ([{"id": _id("re"), "object": "refund", "amount": amount_refunded,
                     "charge": cid, "status": "succeeded"}] if amount_refunded else [])
        return {"id": cid, "object": "charge", "amount": amount, "amount_captured": amount,
                "amount_refunded": amount_refunded, "refunded": amount_refunded >= amount,
                "currency": currency, "customer": customer, "payment_intent": payment_intent,
                "paid": True, "status": "succeeded", "livemode": self.livemode,
                "refunds": {"object": "list", "data": refunds, "has_more": False}}

    def dispute(self, *, payment_intent: str, charge: str, amount: int, currency: str = "inr"):
        return {"id": _id("dp"), "object": "dispute", "amount": amount, "currency": currency,
                "charge": charge, "payment_intent": payment_intent, "reason": "fraudulent",
                "status": "needs_response", "livemode": self.livemode}

    def event(self, type_: str, obj: dict, *, created: int | None = None,
              previous_attributes: dict | None = None, livemode: bool | None = None) -> dict:
        data = {"object": json.loads(json.dumps(obj))}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        return {"id": _id("evt"), "object": "event", "api_version": API_VERSION,
                "type": type_, "created": created or int(time.time()),
                "livemode": self.livemode if livemode is None else livemode,
                "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                "data": data}


def signed_headers(body: bytes, secret: str, *, timestamp: int | None = None) -> dict:
    """Headers for a webhook request signed the way Stripe signs them."""
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=timestamp if timestamp is not None else int(time.time()))
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def post_event(client, event: dict, secret: str, *, timestamp: int | None = None):
    """Deliver an event to POST /webhooks/stripe through the Flask test client."""
    body = json.dumps(event).encode()
    return client.post("/webhooks/stripe", data=body,
                       headers=signed_headers(body, secret, timestamp=timestamp))


def link_stripe_prices(price_ids: dict[str, str]) -> None:
    """Store Stripe price ids on catalogue plans, as `flask stripe sync-prices` would."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import MealPlan

    for slug, price in price_ids.items():
        db.session.execute(sa.update(MealPlan).where(MealPlan.slug == slug)
                           .values(stripe_price_id=price))
    db.session.commit()
