"""The catalogue and plan pages."""
import secrets

import sqlalchemy as sa
from flask import Blueprint, render_template
from flask_login import current_user

from app.checkout.forms import CheckoutForm
from app.extensions import db
from app.gateways import available_gateways
from app.models import MealPlan
from app.services.checkout import get_plan
from app.services.fulfilment import live_subscription

bp = Blueprint("storefront", __name__)


@bp.get("/")
def index():
    """All plans and packs on sale."""
    plans = db.session.scalars(sa.select(MealPlan).where(MealPlan.is_active.is_(True))
                               .order_by(MealPlan.sort_order, MealPlan.id)).all()
    return render_template("storefront/index.html",
                           plans=[p for p in plans if p.is_recurring],
                           packs=[p for p in plans if not p.is_recurring])


@bp.get("/plans/<slug>")
def plan(slug):
    """One plan, with the checkout form."""
    meal_plan = get_plan(slug)
    form = CheckoutForm(checkout_token=secrets.token_urlsafe(24))
    form.gateway.choices = [(name, name) for name in available_gateways()]
    subscribed = (current_user.is_authenticated and meal_plan.is_recurring
                  and live_subscription(current_user.id) is not None)
    return render_template("storefront/plan.html", plan=meal_plan, form=form,
                           gateways=available_gateways(), already_subscribed=subscribed)
