"""`flask stripe …`: Stripe catalogue tools."""
import sys

import click
from flask.cli import with_appcontext

from app.errors import TiffinError
from app.gateways import get_gateway
from app.services.stripe_sync import sync_prices


@click.group("stripe")
def stripe_group():
    """Stripe tools."""


@stripe_group.command("sync-prices")
@with_appcontext
def sync_prices_command():
    """Create or look up a Stripe Product and Price per active plan and store the price ids.

    Prices named in STRIPE_PRICE_IDS (slug=price_id,…) are used as given.
    Exit codes: 0 done, 1 Stripe not configured or unreachable.
    """
    try:
        price_ids = sync_prices(get_gateway("stripe"))
    except TiffinError as exc:
        click.echo(f"error: {exc.code}: {exc.detail}", err=True)
        sys.exit(1)
    for slug, price_id in price_ids.items():
        click.echo(f"{slug} = {price_id}")
    click.echo(f"{len(price_ids)} plan(s) have a Stripe price.")
