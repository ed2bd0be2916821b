"""`flask orders …`: operator tools for single orders."""
import click
from flask.cli import with_appcontext

from app.errors import TiffinError
from app.services.checkout import expire_checkouts
from app.services.refunds import RefundRefused, refund_order


@click.group("orders")
def orders_group():
    """Operator tools for single orders."""


@orders_group.command("refund")
@click.argument("reference")
@click.option("--amount", "amount_minor", type=click.IntRange(min=1), default=None,
              help="Amount in minor units (paise); default: everything not yet refunded.")
@with_appcontext
def refund_command(reference, amount_minor):
    """Refund an order at its gateway (exit 0 done or pending, 1 refused, 2 usage)."""
    try:
        outcome = refund_order(reference, amount_minor, actor="cli:orders-refund")
    except (RefundRefused, TiffinError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Refund {outcome.refund_id}: {outcome.amount_minor} {outcome.order.currency} "
               f"for {reference} is {outcome.gateway_status}; order is {outcome.order_status}.")


@orders_group.command("expire-checkouts")
@with_appcontext
def expire_checkouts_command():
    """Close checkouts past CHECKOUT_EXPIRY_MINUTES with nothing received (exit 0)."""
    closed = expire_checkouts(actor="cli:orders-expire-checkouts")
    click.echo(f"Closed {closed} expired checkout(s): not completed, not charged.")
