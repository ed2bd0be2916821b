"""Read queries for the operator console (/ops/) and /metrics.

Every function is a handful of set-based queries on indexed columns, so the
dashboard and the searches stay fast at a million orders: windows on
`orders.paid_at`, counts through the status indexes, lookups through the unique
keys on gateway ids (queried with `gateway IN (...)` so the composite indexes
apply), name prefixes through `lower(name)`. Nothing here changes data; the
console's actions are in `app.services.operator_actions`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, time as dtime, timedelta, timezone

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.gateways import GATEWAY_CLASSES, available_gateways
from app.models import (AuditLogEntry, CreditLedgerEntry, MonitorRun, NotificationOutbox, Order,
                        Subscription, User, WebhookDeliveryAttempt, WebhookEvent)
from app.models.ops import OUTBOX_FAILED, OUTBOX_PENDING
from app.models.types import UTCDateTime, utcnow
from app.models.webhook import EVENT_DEAD, EVENT_FAILED, EVENT_RECEIVED
from app.security import redact
from app.services import monitoring

PAGE_SIZE = 50
DASHBOARD_FINDINGS = 100  # shown on /ops/, critical first; the rest are counted
SEARCH_LIMIT = 25
TIMELINE_LIMIT = 200

# What each monitor finding means for the customer, in one line.
CUSTOMER_IMPACT = {
    "paid_without_subscription": "The customer paid but has no meal plan: money taken, nothing given.",
    "order_needs_review": "Money may have been taken but the order was not fulfilled; the customer "
                          "is waiting for their meals.",
    "orphan_subscription": "The customer has a plan whose payment did not go through or was "
                           "refunded: meals given without money.",
    "multiple_live_subscriptions": "The customer holds two live plans and may be billed twice.",
    "user_status_drift": "The customer's account page shows the wrong plan status or meal credits.",
    "payment_user_mismatch": "A payment was credited to the wrong account: one customer paid, "
                             "another got the meals.",
    "webhook_events": "News from the gateway (a payment, renewal or refund) has not reached the "
                      "customer's account yet.",
    "gateway_webhooks_quiet": "Payments at this gateway may not be reaching us: customers pay and "
                              "wait for a confirmation that never comes.",
    "authorized_not_captured": "The customer's money is held but not captured: the gateway will "
                               "refund it on its own and the order will be lost.",
    "notification_outbox": "The customer has not received an email we owe them (confirmation, "
                           "receipt or warning).",
    "order_pending_too_long": "A checkout was never finished; the customer may believe they paid.",
}


# --- dashboard -------------------------------------------------------------------

def latest_run() -> MonitorRun | None:
    return db.session.scalars(sa.select(MonitorRun).order_by(MonitorRun.started_at.desc(),
                                                             MonitorRun.id.desc()).limit(1)).first()


def latest_finished_run() -> MonitorRun | None:
    return db.session.scalars(sa.select(MonitorRun).where(MonitorRun.finished_at.is_not(None))
                              .order_by(MonitorRun.finished_at.desc(), MonitorRun.id.desc())
                              .limit(1)).first()


def run_findings(run: MonitorRun | None) -> list[dict]:
    """The run's findings, critical first, each with its customer impact."""
    if run is None or not run.summary:
        return []
    found = sorted(run.summary.get("findings") or [],
                   key=lambda f: f["severity"] != monitoring.CRITICAL)
    return [{**f, "impact": CUSTOMER_IMPACT.get(f["check"], "")} for f in found]


def gateway_activity() -> list[dict]:
    """Each configured gateway's last webhook and how long it has been quiet."""
    now = utcnow()
    quiet_after = timedelta(hours=current_app.config["MONITOR_WEBHOOK_QUIET_HOURS"])
    rows = []
    for name in available_gateways():
        last = db.session.scalar(sa.select(sa.func.max(WebhookEvent.received_at))
                                 .where(WebhookEvent.gateway == name))
        if isinstance(last, datetime) and last.tzinfo is None:
            last = UTCDateTime().process_result_value(last, None)
        quiet = (now - last) if last else None
        rows.append({"gateway": name, "last_webhook_at": last, "quiet": quiet,
                     "too_quiet": quiet is None or quiet > quiet_after})
    return rows


def _count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


def inbox_health() -> dict:
    stuck_cutoff = utcnow() - timedelta(minutes=current_app.config["MONITOR_WEBHOOK_STUCK_MINUTES"])
    return {"failed": _count(WebhookEvent, WebhookEvent.status == EVENT_FAILED),
            "dead": _count(WebhookEvent, WebhookEvent.status == EVENT_DEAD),
            "stuck": _count(WebhookEvent, WebhookEvent.status == EVENT_RECEIVED,
                            WebhookEvent.received_at < stuck_cutoff)}


def outbox_health() -> dict:
    cutoff = utcnow() - timedelta(minutes=current_app.config["MONITOR_OUTBOX_STUCK_MINUTES"])
    return {"stuck": _count(NotificationOutbox, NotificationOutbox.status == OUTBOX_PENDING,
                            NotificationOutbox.created_at < cutoff),
            "failed": _count(NotificationOutbox, NotificationOutbox.status == OUTBOX_FAILED)}


def _utc_midnight(now: datetime) -> datetime:
    return datetime.combine(now.date(), dtime(0), tzinfo=now.tzinfo)


def _sales_query():
    """Paid orders and gross revenue today / 7 d / 30 d, per gateway and currency:
    one pass over the last 30 days of ix_orders_paid_at."""
    def window(name):
        inside = Order.paid_at >= sa.bindparam(name, type_=UTCDateTime())
        return (sa.func.sum(sa.case((inside, 1), else_=0)).label(f"orders_{name}"),
                sa.func.sum(sa.case((inside, Order.amount_minor), else_=0)).label(f"revenue_{name}"))
    return (sa.select(Order.gateway, Order.currency, *window("today"), *window("d7"),
                      *window("d30"))
            .where(Order.paid_at >= sa.bindparam("d30", type_=UTCDateTime()))
            .group_by(Order.gateway, Order.currency).order_by(Order.gateway, Order.currency))


def sales_params(now: datetime | None = None) -> dict:
    now = now or utcnow()
    return {"today": _utc_midnight(now), "d7": now - timedelta(days=7),
            "d30": now - timedelta(days=30)}


def sales_summary() -> list[dict]:
    rows = db.session.execute(_sales_query(), sales_params()).mappings().all()
    return [dict(r) for r in rows]


def dashboard() -> dict:
    """Everything on /ops/ in one call."""
    run = latest_run()
    shown = run if run is not None and run.finished_at is not None else latest_finished_run()
    findings = run_findings(shown)
    data = {"run": run, "shown_run": shown, "findings": findings[:DASHBOARD_FINDINGS],
            "more_findings": max(len(findings) - DASHBOARD_FINDINGS, 0),
            "counts": {k: v for k, v in ((shown.summary or {}).get("counts") or {}).items() if v}
            if shown is not None else {},
            "gateways": gateway_activity(), "inbox": inbox_health(), "outbox": outbox_health(),
            "sales": sales_summary()}
    db.session.rollback()  # end the read transaction
    return data


def sql_of(statement) -> str:
    """A statement's SQL as the database runs it (for the benchmark's raw-SQL side)."""
    return str(statement.compile(dialect=db.engine.dialect))


# --- charts ----------------------------------------------------------------------

def _bucket(column, unit: str):
    """A UTC day ('YYYY-MM-DD') or hour ('YYYY-MM-DD HH:00') label, on either database."""
    if db.engine.dialect.name == "postgresql":
        fmt = "YYYY-MM-DD" if unit == "day" else "YYYY-MM-DD HH24:00"
        return sa.func.to_char(sa.func.timezone("UTC", column), fmt)
    return sa.func.strftime("%Y-%m-%d" if unit == "day" else "%Y-%m-%d %H:00", column)


def _days(now: datetime, n: int) -> list[str]:
    return [(now - timedelta(days=n - 1 - i)).strftime("%Y-%m-%d") for i in range(n)]


def _hours(now: datetime, n: int) -> list[str]:
    return [(now - timedelta(hours=n - 1 - i)).strftime("%Y-%m-%d %H:00") for i in range(n)]


def chart_data(days: int = 30, hours: int = 48) -> dict:
    """Series for the charts page: per day for 30 days, webhooks per hour for 48 hours."""
    now = utcnow()
    since = _utc_midnight(now) - timedelta(days=days - 1)
    day = _bucket(Order.paid_at, "day")
    paid = db.session.execute(sa.select(day, Order.currency, sa.func.count(),
                                        sa.func.sum(Order.amount_minor))
                              .where(Order.paid_at >= since).group_by(day, Order.currency)).all()
    renewal_day = _bucket(Order.paid_at, "day")
    renewals_paid = dict(db.session.execute(
        sa.select(renewal_day, sa.func.count()).where(Order.paid_at >= since,
                                                      Order.kind == "renewal")
        .group_by(renewal_day)).all())
    audit_day = _bucket(AuditLogEntry.created_at, "day")
    audit_counts = db.session.execute(
        sa.select(audit_day, AuditLogEntry.action, sa.func.count())
        .where(AuditLogEntry.action.in_(("subscription_past_due", "order_refunded",
                                         "order_partially_refunded", "order_disputed")),
               AuditLogEntry.created_at >= since)
        .group_by(audit_day, AuditLogEntry.action)).all()
    hour = _bucket(WebhookDeliveryAttempt.started_at, "hour")
    deliveries = db.session.execute(
        sa.select(hour, WebhookDeliveryAttempt.outcome, sa.func.count(),
                  sa.func.avg(WebhookDeliveryAttempt.duration_ms))
        .where(WebhookDeliveryAttempt.started_at >= now - timedelta(hours=hours))
        .group_by(hour, WebhookDeliveryAttempt.outcome)).all()
    db.session.rollback()

    labels = _days(now, days)
    currencies = sorted({r[1] for r in paid})
    orders_per_day = {d: 0 for d in labels}
    revenue = {c: {d: 0 for d in labels} for c in currencies}
    for d, currency, n, total in paid:
        if d in orders_per_day:
            orders_per_day[d] += n
            revenue[currency][d] += int(total or 0)
    by_action = {}
    for d, action, n in audit_counts:
        by_action.setdefault(action, {})[d] = n
    hour_labels = _hours(now, hours)
    outcomes = sorted({r[1] for r in deliveries})
    per_outcome = {o: {h: 0 for h in hour_labels} for o in outcomes}
    latency_sum = {h: [0.0, 0] for h in hour_labels}
    for h, outcome, n, avg_ms in deliveries:
        if h in latency_sum:
            per_outcome[outcome][h] = n
            latency_sum[h][0] += float(avg_ms or 0) * n
            latency_sum[h][1] += n
    return {
        "days": labels, "hours": hour_labels,
        "orders_per_day": [orders_per_day[d] for d in labels],
        "revenue_per_day": {c: [revenue[c][d] for d in labels] for c in currencies},
        "renewals_paid": [renewals_paid.get(d, 0) for d in labels],
        "renewals_failed": [by_action.get("subscription_past_due", {}).get(d, 0) for d in labels],
        "refunds": [by_action.get("order_refunded", {}).get(d, 0)
                    + by_action.get("order_partially_refunded", {}).get(d, 0) for d in labels],
        "disputes": [by_action.get("order_disputed", {}).get(d, 0) for d in labels],
        "deliveries": {o: [per_outcome[o][h] for h in hour_labels] for o in outcomes},
        "latency_ms": [round(latency_sum[h][0] / latency_sum[h][1], 1) if latency_sum[h][1]
                       else None for h in hour_labels],
    }


# --- webhook inbox ---------------------------------------------------------------

@dataclass
class Page:
    items: list
    page: int
    has_next: bool

    @property
    def has_prev(self) -> bool:
        return self.page > 1


def _as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def webhook_events(*, gateway=None, status=None, event_type=None, since=None, until=None,
                   page: int = 1, per_page: int = PAGE_SIZE) -> Page:
    """Newest first, filtered; pages by LIMIT n+1 (no count of the whole table).
    Naive `since`/`until` (a browser's datetime-local) are taken as UTC."""
    since, until = _as_utc(since), _as_utc(until)
    query = sa.select(WebhookEvent).order_by(WebhookEvent.received_at.desc(),
                                             WebhookEvent.id.desc())
    if gateway:
        query = query.where(WebhookEvent.gateway == gateway)
    if status:
        query = query.where(WebhookEvent.status == status)
    if event_type:
        query = query.where(WebhookEvent.event_type == event_type)
    if since:
        query = query.where(WebhookEvent.received_at >= since)
    if until:
        query = query.where(WebhookEvent.received_at < until)
    page = max(page, 1)
    rows = db.session.scalars(query.limit(per_page + 1).offset((page - 1) * per_page)).all()
    return Page(rows[:per_page], page, len(rows) > per_page)


def webhook_event(event_pk: int) -> WebhookEvent | None:
    return db.session.get(WebhookEvent, event_pk)


def delivery_attempts(event_pk: int) -> list[WebhookDeliveryAttempt]:
    return db.session.scalars(sa.select(WebhookDeliveryAttempt)
                              .where(WebhookDeliveryAttempt.webhook_event_id == event_pk)
                              .order_by(WebhookDeliveryAttempt.id)).all()


def event_types() -> list[str]:
    """Event types for the filter: every type a handler knows, plus what was stored."""
    from app.webhooks.handlers import HANDLERS

    return sorted({t for handlers in HANDLERS.values() for t in handlers})


# Keys whose values are personal data or secrets: masked on the event page.
_MASKED_KEY = re.compile(r"(e-?mail|name|phone|contact|address|line1|line2|city|postal|zip|"
                         r"card|last4|fingerprint|vpa|bank|account|ip$|secret|token|signature|"
                         r"password|billing|shipping|tax_id|iban|upi)", re.I)
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")
MASK = "•••"


def _mask_value(value):
    if isinstance(value, str):
        if "@" in value:
            return _EMAIL.sub(r"\1" + MASK + r"@\2", value)
        return MASK if value else value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return MASK
    return mask(value, force=True) if isinstance(value, (dict, list)) else value


def mask(data, *, force: bool = False):
    """A copy with personal data and secrets masked (keys by name, emails and card
    numbers wherever they appear)."""
    if isinstance(data, dict):
        return {k: (_mask_value(v) if force or _MASKED_KEY.search(str(k)) else mask(v))
                for k, v in data.items()}
    if isinstance(data, list):
        return [_mask_value(v) if force else mask(v) for v in data]
    if isinstance(data, str):
        return redact(_EMAIL.sub(r"\1" + MASK + r"@\2", data))
    return data


def pretty_payload(event: WebhookEvent) -> str:
    return json.dumps(mask(event.payload), indent=2, sort_keys=True, ensure_ascii=False,
                      default=str)


# --- outbox ----------------------------------------------------------------------

def outbox_problems(limit: int = 200) -> list[NotificationOutbox]:
    """Failed emails, and pending ones older than the monitor's stuck threshold."""
    cutoff = utcnow() - timedelta(minutes=current_app.config["MONITOR_OUTBOX_STUCK_MINUTES"])
    return db.session.scalars(sa.select(NotificationOutbox).where(sa.or_(
        NotificationOutbox.status == OUTBOX_FAILED,
        sa.and_(NotificationOutbox.status == OUTBOX_PENDING,
                NotificationOutbox.created_at < cutoff)))
        .order_by(NotificationOutbox.id).limit(limit)).all()


# --- customers and orders ----------------------------------------------------------

def _gateway_names() -> list[str]:
    return sorted(GATEWAY_CLASSES)


def search_statements(q: str) -> dict:
    """The lookups behind a search, each on an index (also timed raw by the benchmark)."""
    q = q.strip()
    low = q.lower()
    gateways = _gateway_names()
    users = []
    if "@" in q:
        users.append(sa.select(User.id).where(User.email == low))
    if "@" in q or (len(q) >= 3 and " " not in q):
        users.append(sa.select(User.id).where(User.email.startswith(low, autoescape=True))
                     .order_by(User.email).limit(SEARCH_LIMIT))
    if "@" not in q and len(q) >= 2:
        users.append(sa.select(User.id).where(sa.func.lower(User.name).startswith(
            low, autoescape=True)).order_by(sa.func.lower(User.name)).limit(SEARCH_LIMIT))
    users.append(sa.select(User.id).where(sa.or_(User.stripe_customer_id == q,
                                                 User.razorpay_customer_id == q)))
    users.append(sa.select(Subscription.user_id).where(Subscription.gateway.in_(gateways),
                                                       Subscription.gateway_subscription_id == q))
    orders = [sa.select(Order.id).where(Order.reference == q.upper()),
              sa.select(Order.id).where(Order.gateway.in_(gateways), Order.gateway_order_id == q),
              sa.select(Order.id).where(Order.gateway.in_(gateways), Order.gateway_payment_id == q),
              sa.select(Order.id).where(Order.gateway_customer_id == q).limit(SEARCH_LIMIT),
              sa.select(Subscription.order_id).where(Subscription.gateway.in_(gateways),
                                                     Subscription.gateway_subscription_id == q)]
    return {"users": users, "orders": orders}


def search(q: str) -> dict:
    """Customers and orders matching an email (or its start), a name's start, an order
    reference, or a gateway id (payment, order, session, subscription, customer)."""
    if not q or not q.strip():
        return {"customers": [], "orders": [], "query": ""}
    statements = search_statements(q)
    user_ids, order_ids = [], []
    for stmt in statements["users"]:
        user_ids += [i for i in db.session.scalars(stmt) if i not in user_ids]
    for stmt in statements["orders"]:
        order_ids += [i for i in db.session.scalars(stmt) if i not in order_ids]
    customers = db.session.scalars(sa.select(User).where(User.id.in_(user_ids[:SEARCH_LIMIT]))
                                   .order_by(User.email)).all() if user_ids else []
    orders = db.session.scalars(sa.select(Order).where(Order.id.in_(order_ids[:SEARCH_LIMIT]))
                                .order_by(Order.created_at.desc())).all() if order_ids else []
    return {"customers": customers, "orders": orders, "query": q.strip()}


def customer(user_id: int) -> dict | None:
    user = db.session.get(User, user_id)
    if user is None:
        return None
    subscriptions = db.session.scalars(sa.select(Subscription).where(
        Subscription.user_id == user_id).order_by(Subscription.id.desc())).all()
    orders = db.session.scalars(sa.select(Order).where(Order.user_id == user_id)
                                .order_by(Order.created_at.desc()).limit(100)).all()
    ledger = db.session.scalars(sa.select(CreditLedgerEntry).where(
        CreditLedgerEntry.user_id == user_id).order_by(CreditLedgerEntry.created_at.desc(),
                                                       CreditLedgerEntry.id.desc())
        .limit(100)).all()
    return {"user": user, "subscriptions": subscriptions, "orders": orders, "ledger": ledger,
            "timeline": timeline(user_id=user_id, orders=orders, subscriptions=subscriptions)}


def order_detail(reference: str) -> dict | None:
    order = db.session.scalars(sa.select(Order).where(Order.reference == reference)).first()
    if order is None:
        return None
    subscription = db.session.scalars(sa.select(Subscription).where(
        Subscription.order_id == (order.parent_order_id or order.id))).first()
    renewals = db.session.scalars(sa.select(Order).where(Order.parent_order_id == order.id)
                                  .order_by(Order.created_at)).all()
    return {"order": order, "user": db.session.get(User, order.user_id),
            "subscription": subscription, "renewals": renewals,
            "gateway_links": gateway_links(order, subscription),
            "timeline": timeline(order=order, orders=[order],
                                 subscriptions=[subscription] if subscription else [])}


def gateway_links(order: Order, subscription: Subscription | None) -> list[dict]:
    """The order's gateway ids, each with a link to the gateway's own dashboard."""
    ids = [("order / session", order.gateway_order_id), ("payment", order.gateway_payment_id),
           ("customer", order.gateway_customer_id),
           ("subscription", subscription.gateway_subscription_id if subscription else None)]
    return [{"kind": kind, "id": value, "url": dashboard_url(order.gateway, kind, value)}
            for kind, value in ids if value]


def dashboard_url(gateway: str, kind: str, value: str) -> str | None:
    if gateway == "stripe":
        mode = "" if current_app.config.get("STRIPE_SECRET_KEY", "").startswith("sk_live_") \
            else "test/"
        path = {"payment": "payments", "customer": "customers", "subscription": "subscriptions",
                "order / session": "checkout/sessions"}[kind]
        return f"https://dashboard.stripe.com/{mode}{path}/{value}"
    if gateway == "razorpay":
        path = {"payment": "payments", "customer": "customers", "subscription": "subscriptions",
                "order / session": "subscriptions" if value.startswith("sub_") else "orders"}[kind]
        return f"https://dashboard.razorpay.com/app/{path}/{value}"
    return None  # the test gateway has no dashboard


def _event_ids_for(orders: list[Order], subscriptions: list) -> list[str]:
    values = set()
    for o in orders:
        values.update(v for v in (o.gateway_order_id, o.gateway_payment_id, o.reference) if v)
    for s in subscriptions:
        if s is not None and s.gateway_subscription_id:
            values.add(s.gateway_subscription_id)
    return sorted(values)


def related_webhook_events(orders: list[Order], subscriptions: list) -> list[WebhookEvent]:
    """Events whose payload names one of these orders' gateway ids or references.

    Bounded to the events received since the oldest of these orders was made (on
    ix_webhook_events_received), and to TIMELINE_LIMIT rows."""
    needles = _event_ids_for(orders, subscriptions)
    if not needles or not orders:
        return []
    since = min(o.created_at for o in orders) - timedelta(minutes=5)
    text = sa.cast(WebhookEvent.payload, sa.Text)
    return db.session.scalars(sa.select(WebhookEvent).where(
        WebhookEvent.received_at >= since,
        sa.or_(*[text.contains(n, autoescape=True) for n in needles[:50]]))
        .order_by(WebhookEvent.received_at.desc()).limit(TIMELINE_LIMIT)).all()


def timeline(*, user_id: int | None = None, order: Order | None = None, orders=(),
             subscriptions=()) -> list[dict]:
    """Audit entries, webhook events and emails, newest first, merged by time."""
    entries = []
    audit_where = AuditLogEntry.order_id == order.id if order is not None \
        else AuditLogEntry.user_id == user_id
    for a in db.session.scalars(sa.select(AuditLogEntry).where(audit_where)
                                .order_by(AuditLogEntry.created_at.desc())
                                .limit(TIMELINE_LIMIT)):
        entries.append({"at": a.created_at, "kind": "audit", "title": a.action,
                        "detail": f"by {a.actor}" + (f" · {json.dumps(a.details, default=str)}"
                                                     if a.details else ""), "ref": a.id})
    for e in related_webhook_events(list(orders), list(subscriptions)):
        entries.append({"at": e.received_at, "kind": "webhook", "title": f"{e.gateway} "
                        f"{e.event_type}", "detail": f"{e.status} · {e.event_id}", "ref": e.id})
    if order is None and user_id is not None:
        for m in db.session.scalars(sa.select(NotificationOutbox).where(
                NotificationOutbox.user_id == user_id).order_by(NotificationOutbox.id.desc())
                .limit(TIMELINE_LIMIT)):
            entries.append({"at": m.created_at, "kind": "email", "title": m.subject,
                            "detail": f"{m.kind} · {m.status}"
                            + (f" · {m.last_error[:120]}" if m.last_error else ""), "ref": m.id})
    entries.sort(key=lambda x: x["at"], reverse=True)
    return entries[:TIMELINE_LIMIT]


def audit_entries(*, action_prefix: str = "ops_", limit: int = 100) -> list[AuditLogEntry]:
    return db.session.scalars(sa.select(AuditLogEntry).where(
        AuditLogEntry.action.startswith(action_prefix)).order_by(AuditLogEntry.id.desc())
        .limit(limit)).all()


# --- /metrics ---------------------------------------------------------------------

def metrics_snapshot() -> dict:
    """Backlogs, dead letters, orders by status and the latest findings, for /metrics."""
    inbox = dict(db.session.execute(
        sa.select(WebhookEvent.status, sa.func.count())
        .where(WebhookEvent.status.in_((EVENT_RECEIVED, EVENT_FAILED)))
        .group_by(WebhookEvent.status)).all())
    outbox = dict(db.session.execute(
        sa.select(NotificationOutbox.status, sa.func.count())
        .where(NotificationOutbox.status.in_((OUTBOX_PENDING, OUTBOX_FAILED)))
        .group_by(NotificationOutbox.status)).all())
    orders = dict(db.session.execute(sa.select(Order.status, sa.func.count())
                                     .group_by(Order.status)).all())
    run = latest_finished_run()
    summary = (run.summary or {}) if run is not None else {}
    findings = {"critical": summary.get("critical", 0), "warning": summary.get("warning", 0)}
    snapshot = {"inbox_backlog": {s: inbox.get(s, 0) for s in (EVENT_RECEIVED, EVENT_FAILED)},
                "dead_letters": _count(WebhookEvent, WebhookEvent.status == EVENT_DEAD),
                "outbox_backlog": {s: outbox.get(s, 0) for s in (OUTBOX_PENDING, OUTBOX_FAILED)},
                "orders_by_status": orders, "findings_by_severity": findings}
    db.session.rollback()
    return snapshot
