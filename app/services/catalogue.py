"""The catalogue: what is on sale, and the starter catalogue `make run` seeds."""
from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import MealPlan

STARTER_CATALOGUE = [
    dict(slug="trial-week", name="Trial Week",
         description="Five weekday lunches to see if Tiffin suits you. Renews weekly.",
         kind="subscription", price_minor=89900, currency="INR", billing_interval="week",
         meals_per_period=5, sort_order=10),
    dict(slug="lunch-monthly", name="Everyday Lunch",
         description="Twenty freshly cooked weekday lunches a month, delivered hot.",
         kind="subscription", price_minor=299900, currency="INR", billing_interval="month",
         meals_per_period=20, sort_order=20),
    dict(slug="family-monthly", name="Family Dinner",
         description="Forty dinners a month for the whole household: dal, sabzi, rice, rotis.",
         kind="subscription", price_minor=549900, currency="INR", billing_interval="month",
         meals_per_period=40, sort_order=30),
    dict(slug="meal-pack-5", name="Extra Meals ×5",
         description="Five extra meals to use whenever you like. They never expire.",
         kind="addon", price_minor=79900, currency="INR", billing_interval=None,
         meals_per_period=5, sort_order=100),
]


def seed_catalogue() -> list[str]:
    """Insert the starter plans that are missing (by slug); returns the slugs added."""
    existing = set(db.session.scalars(sa.select(MealPlan.slug)))
    added = []
    for spec in STARTER_CATALOGUE:
        if spec["slug"] not in existing:
            db.session.add(MealPlan(**spec))
            added.append(spec["slug"])
    db.session.commit()
    return added
