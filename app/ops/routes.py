"""The operator console: views are a guard, one service call, a render.

Reads go through `app.services.console`; every change through
`app.services.operator_actions`, which calls the same services as the CLI and
audits the operator's action. CSRFProtect refuses any POST without its token.
"""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.errors import TiffinError
from app.extensions import login_manager
from app.ops.charts import render_charts
from app.ops.forms import RefundForm, RepairForm, WebhookFilterForm
from app.ops.presenters import finding_action, finding_subject
from app.services import console, operator_actions
from app.services.operator_actions import ActionRefused

bp = Blueprint("ops", __name__, url_prefix="/ops")


@bp.before_request
def require_operator():
    """Anonymous: the sign-in page. Signed in without the operator role: 403 OPS_FORBIDDEN."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not current_user.is_operator:
        raise TiffinError("OPS_FORBIDDEN", f"user {current_user.id} asked for {request.path}")
    return None


@bp.context_processor
def _helpers():
    return {"finding_action": finding_action, "finding_subject": finding_subject}


def _refused(exc: ActionRefused, status: int = 409):
    return render_template("ops/refused.html", message=str(exc)), status


@bp.get("/")
def dashboard():
    """Findings of the latest monitor run, gateways, inbox, outbox, sales."""
    return render_template("ops/dashboard.html", data=console.dashboard())


@bp.post("/monitor/run")
def run_monitor():
    """Start the monitor's checks in the background; the dashboard shows when they finish."""
    run = operator_actions.start_monitor_run(current_user)
    flash(f"Monitor run {run.id} started at {run.started_at:%H:%M:%S} UTC"
          + (" and finished." if run.finished_at else "; refresh to see its findings."), "success")
    return redirect(url_for("ops.dashboard"))


@bp.get("/charts")
def charts():
    """Orders, revenue, renewals, webhooks, refunds and disputes as server-drawn SVG."""
    return render_template("ops/charts.html", charts=render_charts(console.chart_data()))


@bp.get("/repair/<kind>/<target>")
def repair_preview(kind, target):
    """The dry run: what the repair will change, and a button to do it."""
    try:
        preview = operator_actions.preview_repair(kind, target, {"email": request.args.get("email")})
    except ActionRefused as exc:
        return _refused(exc)
    return render_template("ops/repair.html", preview=preview, kind=kind, target=target,
                           spec=operator_actions.REPAIRS[kind],
                           form=RepairForm(email=request.args.get("email")))


@bp.post("/repair/<kind>/<target>")
def repair_run(kind, target):
    """The repair for real (after the dry run), then back to the dashboard."""
    form = RepairForm()
    try:
        outcome = operator_actions.run_repair(kind, target, current_user, {"email": form.email.data})
    except ActionRefused as exc:
        return _refused(exc)
    flash("; ".join(outcome.lines) + (f" — error: {outcome.error}" if outcome.error else ""),
          "error" if outcome.error else "success")
    return redirect(url_for("ops.dashboard"))


@bp.get("/webhooks")
def webhooks():
    """The inbox, filtered and paged."""
    form = WebhookFilterForm(request.args)
    page = console.webhook_events(**_filters(form)) if form.validate() else console.Page([], 1, False)
    return render_template("ops/webhooks.html", form=form, page=page,
                           event_types=console.event_types())


def _filters(form: WebhookFilterForm) -> dict:
    return {"gateway": form.gateway.data or None, "status": form.status.data or None,
            "event_type": (form.event_type.data or "").strip() or None,
            "since": form.since.data, "until": form.until.data, "page": form.page.data or 1}


@bp.get("/webhooks/<int:event_id>")
def webhook_event(event_id):
    """One event: masked payload, every delivery attempt, the error, Replay."""
    event = console.webhook_event(event_id) or abort(404)
    return render_template("ops/webhook_event.html", event=event,
                           payload=console.pretty_payload(event),
                           attempts=console.delivery_attempts(event_id))


@bp.get("/webhooks/<int:event_id>/replay")
def replay_confirm(event_id):
    """What a replay will do, and the button to confirm it."""
    event = console.webhook_event(event_id) or abort(404)
    return render_template("ops/replay_confirm.html", event=event)


@bp.post("/webhooks/<int:event_id>/replay")
def replay(event_id):
    """`flask webhooks replay` for this event."""
    try:
        status = operator_actions.replay_event(event_id, current_user)
    except ActionRefused as exc:
        return _refused(exc, 404)
    flash(f"Replayed: the event is now {status}.", "success" if status == "processed" else "error")
    return redirect(url_for("ops.webhook_event", event_id=event_id))


@bp.get("/outbox")
def outbox():
    """Failed and stuck emails with their errors."""
    return render_template("ops/outbox.html", emails=console.outbox_problems())


@bp.post("/outbox/resend", defaults={"email_id": None})
@bp.post("/outbox/<int:email_id>/resend")
def resend(email_id):
    """Resend one email, or every failed and stuck one."""
    try:
        report = operator_actions.resend_emails(current_user, email_id)
    except ActionRefused as exc:
        return _refused(exc)
    flash(f"Sent {report.sent}, retrying later {report.retrying}, given up {report.failed}"
          + (f"; mail server: {report.server_error}" if report.server_error else "."),
          "error" if report.server_error or report.failed else "success")
    return redirect(url_for("ops.outbox"))


@bp.get("/search")
def search():
    """Customers and orders by email, name, order reference or gateway id."""
    return render_template("ops/search.html", results=console.search(request.args.get("q", "")))


@bp.get("/customers/<int:user_id>")
def customer(user_id):
    """Subscription, credits and ledger, orders, and the merged timeline."""
    data = console.customer(user_id) or abort(404)
    return render_template("ops/customer.html", **data)


@bp.get("/orders/<reference>")
def order(reference):
    """The order's timeline, gateway ids with dashboard links, and refund."""
    data = console.order_detail(reference) or abort(404)
    return render_template("ops/order.html", **data)


@bp.route("/orders/<reference>/refund", methods=["GET", "POST"])
def refund(reference):
    """Confirm (type the reference), then `flask orders refund` for this order."""
    data = console.order_detail(reference) or abort(404)
    form = RefundForm()
    outcome = _refund(form, reference) if form.validate_on_submit() else None
    if outcome is not None:
        flash(f"Refund {outcome.refund_id} of {outcome.amount_minor} {outcome.order.currency} is "
              f"{outcome.gateway_status}; the order is {outcome.order_status}.", "success")
        return redirect(url_for("ops.order", reference=reference))
    return render_template("ops/refund.html", form=form, **data), 400 if form.errors else 200


def _refund(form: RefundForm, reference: str):
    try:
        return operator_actions.refund(reference, form.amount_minor.data,
                                       form.confirm_reference.data, current_user)
    except ActionRefused as exc:
        form.confirm_reference.errors.append(str(exc))
        return None


@bp.get("/audit")
def audit_log():
    """The operators' own actions, newest first."""
    return render_template("ops/audit.html", entries=console.audit_entries())
