"""Verification routes a gateway redirects or posts the shopper back to."""
from flask import Blueprint, redirect, request, url_for
from flask_login import current_user, login_required

from app.services.checkout import confirm_return

bp = Blueprint("payments", __name__, url_prefix="/payments")


@bp.get("/<gateway>/return")
@login_required
def gateway_return(gateway):
    """A redirect back from a hosted payment page."""
    result = confirm_return(gateway, current_user, request.args)
    return redirect(url_for("checkout.success", reference=result.order.reference), code=303)


@bp.post("/<gateway>/verify")
@login_required
def gateway_verify(gateway):
    """A callback the gateway's checkout script posts back with its signature."""
    result = confirm_return(gateway, current_user, request.form)
    return redirect(url_for("checkout.success", reference=result.order.reference), code=303)
