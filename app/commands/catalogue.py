import click
from flask import current_app
from flask.cli import with_appcontext

from app.services.accounts import DEMO_SHOPPER_EMAIL, DEMO_SHOPPER_PASSWORD, ensure_demo_shopper
from app.services.catalogue import seed_catalogue


@click.command("seed")
@click.option("--demo", is_flag=True,
              help="Development only: also create demo accounts and print their credentials.")
@with_appcontext
def seed_command(demo):
    """Add the starter meal plans and add-on pack (only those missing)."""
    if demo and current_app.config["TIFFIN_ENV"] != "development":
        raise click.ClickException("--demo creates accounts with known passwords; "
                                   "it runs only with TIFFIN_ENV=development")
    added = seed_catalogue()
    click.echo(f"Seeded {len(added)} plan(s): {', '.join(added)}" if added
               else "Catalogue already seeded; nothing to add.")
    if demo:
        seed_demo_operator()
        ensure_demo_shopper()
        click.echo(f"Demo shopper: {DEMO_SHOPPER_EMAIL} / password {DEMO_SHOPPER_PASSWORD} "
                   "(sign in at /login)")


def seed_demo_operator() -> None:
    """The demo operator for the console at /ops/ (development only)."""
    from app.services.accounts import ensure_demo_operator

    email, password = ensure_demo_operator()
    click.echo(f"Demo operator: {email} / password {password} (console at /ops/)")
