"""Where each monitor finding leads the operator: the page to act on, or its repair."""
from flask import url_for


def finding_action(finding: dict) -> tuple[str, str] | None:
    """(label, url) of the link to act on a finding, or None for a summary line."""
    d, check = finding.get("details") or {}, finding["check"]
    if finding["key"].endswith(":more"):
        return None
    ref = d.get("reference")
    if check == "paid_without_subscription":
        return "Repair", url_for("ops.repair_preview", kind="missing-subscription", target=ref)
    if check == "user_status_drift":
        return "Repair", url_for("ops.repair_preview", kind="status-drift", target=d["id"])
    if check == "payment_user_mismatch":
        return "Repair", url_for("ops.repair_preview", kind="payment-user-mismatch", target=ref)
    if check in ("order_needs_review", "authorized_not_captured", "order_pending_too_long"):
        return "Reconcile", url_for("ops.repair_preview", kind="reconcile-order", target=ref)
    if check == "orphan_subscription":
        return "Open order", url_for("ops.order", reference=ref)
    if check == "multiple_live_subscriptions":
        return "Open customer", url_for("ops.customer", user_id=d["id"])
    if check == "webhook_events":
        return "Open event", url_for("ops.webhook_event", event_id=d["id"])
    if check == "gateway_webhooks_quiet":
        return "Open inbox", url_for("ops.webhooks", gateway=d["id"])
    if check == "notification_outbox":
        return "Open outbox", url_for("ops.outbox")
    return None


def finding_subject(finding: dict) -> tuple[str, str] | None:
    """(label, url) of the order or customer a finding is about."""
    d = finding.get("details") or {}
    if finding["key"].endswith(":more"):
        return None
    if d.get("reference"):
        return f"order {d['reference']}", url_for("ops.order", reference=d["reference"])
    if finding["check"] in ("user_status_drift", "multiple_live_subscriptions"):
        return f"customer {d['id']}", url_for("ops.customer", user_id=d["id"])
    if d.get("user_id"):
        return f"customer {d['user_id']}", url_for("ops.customer", user_id=d["user_id"])
    return None
