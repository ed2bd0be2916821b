"""Verification routes a gateway redirects or posts the shopper back to."""
from flask import Blueprint, redirect, request, url_for
from flask_login import current_user, login_required

from app.extensions import csrf
from app.services.checkout import confirm_return

bp = Blueprint("payments", __name__, url_prefix="/payments")


@bp.get("/<gateway>/return")
@login_required
def gateway_return(gateway):
    """A redirect back from a hosted payment page."""
    result = confirm_return(gateway, current_user, request.args)
    return redirect(url_for("checkout.success", reference=result.order.reference), code=303)


@bp.post("/<gateway>/verify")
@csrf.exempt
@login_required
def gateway_verify(gateway):
    """A callback the gateway's checkout script posts back with its signature.

    Not CSRF-checked: the gateway's signature over the order and payment proves it,
    it only confirms the signed-in shopper's own order, and a shopper who paid after
    the page's form token expired must still see their payment confirmed.
    """
    result = confirm_return(gateway, current_user, request.form)
    return redirect(url_for("checkout.success", reference=result.order.reference), code=303)
