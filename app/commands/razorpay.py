"""`flask razorpay …`: Razorpay catalogue tools."""
import click
from flask.cli import with_appcontext

from app.errors import TiffinError
from app.services.razorpay_sync import sync_plans


@click.group("razorpay")
def razorpay_group():
    """Razorpay catalogue tools."""


@razorpay_group.command("sync-plans")
@with_appcontext
def sync_plans_command():
    """Create or link a Razorpay plan for every active recurring meal plan (exit 1 on failure)."""
    try:
        results = sync_plans()
    except TiffinError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # the SDK's BadRequestError/ServerError or a network error
        raise click.ClickException(f"Razorpay refused or could not be reached: {exc}") from exc
    for r in results:
        click.echo(f"{r.slug}: {r.razorpay_plan_id} ({r.action})")
    click.echo(f"{len(results)} plan(s) in step with Razorpay.")
