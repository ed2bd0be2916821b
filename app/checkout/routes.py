"""Start a purchase; success and cancel pages."""
from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.checkout.forms import CheckoutForm
from app.errors import TiffinError
from app.extensions import limiter
from app.models.order import ORDER_DISPUTED, ORDER_REFUNDED
from app.services.checkout import (cancel_checkout, check_order, checkout_state, confirm_return,
                                   continue_checkout, start_checkout, unpaid_refusal)
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
        raise TiffinError(form.refusal_code(), f"checkout form invalid: {form.errors}",
                          shopper_detail=form.error_summary())
    order, started = start_checkout(current_user, slug, form.gateway.data, form.checkout_token.data)
    return _to_gateway(order, started)


def _to_gateway(order, started):
    """Send the shopper to the gateway's page: a redirect, or a page of ours."""
    if started.template:
        return render_template(started.template, order=order, **started.context)
    return redirect(started.redirect_url, code=303)


@bp.get("/success/<reference>")
@login_required
def success(reference):
    """The order, the subscription and the meal credits, or where its payment stands."""
    order = check_order(current_user, reference)
    if order.status in (ORDER_REFUNDED, ORDER_DISPUTED):  # charged, then given back or contested
        return redirect(url_for("account.order", reference=reference), code=303)
    if not order.is_paid:
        raise unpaid_refusal(order)
    return render_template("checkout/success.html", order=order,
                           subscription=subscription_for_order(order), user=current_user)


@bp.get("/cancel/<reference>")
@login_required
def cancel(reference):
    """The shopper left the gateway's page: not charged, unless the order is paid or paying."""
    order, paying = cancel_checkout(current_user, reference)
    if paying:
        return redirect(url_for("checkout.success", reference=order.reference), code=303)
    return render_template("checkout/cancel.html", order=order)


@bp.get("/continue/<reference>")
@login_required
def continue_payment(reference):
    """Back to the gateway's page of a checkout that still lives."""
    order, started = continue_checkout(current_user, reference)
    if started is None:  # paid, closed or expired: the order's page says which
        return redirect(url_for("checkout.success", reference=order.reference), code=303)
    return _to_gateway(order, started)


@bp.get("/status/<reference>")
@login_required
def status(reference):
    """Small JSON status for the pending page's poll (asks the gateway, throttled)."""
    order = check_order(current_user, reference)
    return {"reference": order.reference, "status": order.status,
            "state": "paid" if order.is_paid else checkout_state(order)}


@bp.get("/stripe/return")
@login_required
def stripe_return():
    """Stripe Checkout's success_url: verify the order's own session with Stripe, then show it."""
    result = confirm_return("stripe", current_user, request.args)
    return redirect(url_for("checkout.success", reference=result.order.reference), code=303)
