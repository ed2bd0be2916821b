"""The shopper's account: status, credits, orders, and plan actions."""
import sqlalchemy as sa
from flask import (Blueprint, Response, current_app, flash, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_login import current_user, login_required, logout_user

from app.account.forms import DeleteAccountForm
from app.checkout.forms import ActionForm
from app.errors import TiffinError
from app.extensions import db
from app.models import MealPlan
from app.services import accounts, live_updates, plan_changes, subscriptions
from app.services.access import has_access
from app.services.checkout import account_history, checkout_state, order_for_user

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.get("/")
@login_required
def index():
    """Subscription status, period end, meal credits and order history."""
    subscription = subscriptions.current_subscription(current_user)
    orders, checkouts = account_history(current_user)
    other_plans = []
    if subscription is not None and subscription.is_live:
        other_plans = db.session.scalars(sa.select(MealPlan).where(
            MealPlan.is_active.is_(True), MealPlan.kind == "subscription",
            MealPlan.id != subscription.meal_plan_id).order_by(MealPlan.sort_order)).all()
    return render_template("account/index.html", subscription=subscription, orders=orders,
                           checkouts=checkouts,
                           access=has_access(subscription), other_plans=other_plans,
                           form=ActionForm(), live_updates=bool(current_app.config["REDIS_URL"]))


@bp.get("/updates")
@login_required
def updates():
    """Server-Sent Events that tell the account page to reload (needs REDIS_URL)."""
    if not current_app.config.get("REDIS_URL"):
        return "", 204
    return Response(stream_with_context(live_updates.stream(current_user.id)),
                    mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


@bp.get("/orders/<reference>")
@login_required
def order(reference):
    """One of the shopper's own orders (anyone else's is a 404)."""
    order = order_for_user(current_user, reference)
    return render_template("account/order.html", order=order, state=checkout_state(order))


def _action(fn, message=None):
    """Run an account action; back to the account page with `message` (or the
    outcome's own), or on to the payment page the outcome names."""
    if not ActionForm().validate_on_submit():
        raise TiffinError("PAYMENT_SIGNATURE_INVALID", "account action without a valid CSRF token")
    outcome = fn()
    if getattr(outcome, "redirect_url", None):
        return redirect(outcome.redirect_url, code=303)
    flash(message or outcome.message, "success")
    return redirect(url_for("account.index"), code=303)


@bp.post("/subscription/cancel")
@login_required
def cancel_subscription():
    """Cancel at the end of the paid period."""
    return _action(lambda: subscriptions.cancel_at_period_end(current_user),
                   "Your plan will end at the close of the current period.")


@bp.post("/subscription/resume")
@login_required
def resume_subscription():
    """Undo a pending cancellation."""
    return _action(lambda: subscriptions.resume(current_user), "Your plan will continue.")


@bp.get("/subscription/change")
@login_required
def change_plan_preview():
    """What changing to ?plan= costs, when it applies, and what happens to meal credits."""
    change = plan_changes.preview_plan_change(current_user, request.args.get("plan", ""))
    return render_template("account/change_plan.html", change=change, form=ActionForm())


@bp.post("/subscription/change")
@login_required
def change_plan():
    """Switch to another plan as previewed; credits follow the new plan."""
    return _action(lambda: plan_changes.change_plan(current_user, request.form.get("plan", ""),
                                                    request.form.get("proration_date")))


@bp.route("/delete", methods=["GET", "POST"])
@login_required
def delete():
    """Confirm with the password, then cancel the plan and remove personal data."""
    form = DeleteAccountForm()
    if form.validate_on_submit():
        try:
            accounts.delete_account(current_user, form.password.data)
        except accounts.WrongPassword:
            form.password.errors.append("That is not your password.")
        else:
            logout_user()
            flash("Your account has been deleted. Your order records are kept for our books "
                  "without your name or email.", "success")
            return redirect(url_for("storefront.index"), code=303)
    return render_template("account/delete.html", form=form,
                           subscription=subscriptions.current_subscription(current_user)), \
        (400 if form.errors else 200)
