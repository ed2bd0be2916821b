"""The catalogue seed command."""
from app.extensions import db
from app.models import MealPlan
from tests.conftest import count


def test_seed_adds_only_missing_plans(runner):
    first = runner.invoke(args=["seed"])
    assert first.exit_code == 0 and "already seeded" in first.output  # the fixture seeded
    db.session.query(MealPlan).filter_by(slug="meal-pack-5").delete()
    db.session.commit()
    again = runner.invoke(args=["seed"])
    assert again.exit_code == 0 and "meal-pack-5" in again.output
    assert count(MealPlan) == 4
    assert count(MealPlan, MealPlan.kind == "addon") == 1
