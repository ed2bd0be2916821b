import click
from flask.cli import with_appcontext

from app.services.catalogue import seed_catalogue


@click.command("seed")
@with_appcontext
def seed_command():
    """Add the starter meal plans and add-on pack (only those missing)."""
    added = seed_catalogue()
    click.echo(f"Seeded {len(added)} plan(s): {', '.join(added)}" if added
               else "Catalogue already seeded; nothing to add.")
