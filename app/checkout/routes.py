"""Start a purchase; success and cancel pages."""
from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.checkout.forms import CheckoutForm
from app.errors import CATALOGUE, TiffinError
from app.extensions import limiter
from app.services.checkout import cancel_checkout, confirm_return, order_for_user, start_checkout
from app.services.fulfilment import subscription_for_order

bp = Blueprint("checkout", __name__, url_prefix="/checkout")


def _checkout_limit():
    return current_app.config["CHECKOUT_RATE_LIMIT"]


@bp.post("/<slug>")
@login_required
@limiter.limit(_checkout_limit)
def start(slug):
    """Create a pending order and send the shopper to the gateway."""
    form = CheckoutForm()
    form.gateway.choices = []
    if not form.validate_on_submit():
        raise TiffinError("GATEWAY_NOT_CONFIGURED", f"checkout form invalid: {form.errors}")
    order, started = start_checkout(current_user, slug, form.gateway.data, form.checkout_token.data)
    if started.template:
        return render_template(started.template, order=order, **started.context)
    return redirect(started.redirect_url, code=303)


@bp.get("/success/<reference>")
@login_required
def success(reference):
    """The order, the subscription and the meal credits, or a page that waits for them."""
    order = order_for_user(current_user, reference)
    if not order.is_paid:
        raise TiffinError(_code_for_unpaid(order), f"order {reference} is {order.status}",
                          order_reference=reference, shopper_detail=order.failure_message
                          if order.status == "failed" else None)
    return render_template("checkout/success.html", order=order,
                           subscription=subscription_for_order(order), user=current_user)


def _code_for_unpaid(order) -> str:
    """The error code that tells the shopper where an unpaid order stands."""
    if order.status == "pending":
        return "PAYMENT_PENDING_CONFIRMATION"
    if order.status == "needs_review":
        return order.failure_code if order.failure_code in CATALOGUE else "PAYMENT_AMOUNT_MISMATCH"
    if order.status == "failed":
        return "PAYMENT_DECLINED"
    return "PAYMENT_NOT_COMPLETED"


@bp.get("/cancel/<reference>")
@login_required
def cancel(reference):
    """The shopper left the gateway's page without paying."""
    order = cancel_checkout(current_user, reference)
    return render_template("checkout/cancel.html", order=order)


@bp.get("/status/<reference>")
@login_required
def status(reference):
    """Small JSON status for the pending page's poll."""
    order = order_for_user(current_user, reference)
    return {"reference": order.reference, "status": order.status}


@bp.get("/stripe/return")
@login_required
def stripe_return():
    """Stripe Checkout's success_url: verify the session with Stripe, then show the order."""
    result = confirm_return("stripe", current_user, {"session_id": request.args.get("session_id", "")})
    return redirect(url_for("checkout.success", reference=result.order.reference), code=303)
