"""`flask orders …`: operator tools for single orders."""
import json

import click
from flask.cli import with_appcontext

from app.errors import TiffinError
from app.services.checkout import expire_checkouts
from app.services.refunds import RefundRefused, refund_order
from app.services.unmatched import grant_held


@click.group("orders")
def orders_group():
    """Operator tools for single orders."""


@orders_group.command("refund")
@click.argument("reference")
@click.option("--amount", "amount_minor", type=click.IntRange(min=1), default=None,
              help="Amount in minor units (paise); default: everything not yet refunded.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_appcontext
def refund_command(reference, amount_minor, as_json):
    """Refund an order at its gateway (exit 0 done or pending, 1 refused, 2 usage)."""
    try:
        outcome = refund_order(reference, amount_minor, actor="cli:orders-refund")
    except (RefundRefused, TiffinError) as exc:
        if as_json:
            click.echo(json.dumps({"reference": reference, "refunded": False,
                                   "error": getattr(exc, "code", "REFUND_REFUSED"),
                                   "detail": getattr(exc, "detail", str(exc))}, indent=2))
            click.get_current_context().exit(1)
        raise click.ClickException(str(exc)) from exc
    if as_json:
        return click.echo(json.dumps(outcome.as_dict(), indent=2))
    click.echo(f"Refund {outcome.refund_id}: {outcome.amount_minor} {outcome.order.currency} "
               f"for {reference} is {outcome.gateway_status}; order is {outcome.order_status}.")


@orders_group.command("expire-checkouts")
@with_appcontext
def expire_checkouts_command():
    """Close checkouts past CHECKOUT_EXPIRY_MINUTES with nothing received (exit 0)."""
    closed = expire_checkouts(actor="cli:orders-expire-checkouts")
    click.echo(f"Closed {closed} expired checkout(s): not completed, not charged.")


@orders_group.command("grant")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_appcontext
def grant_command(reference, as_json):
    """Give what a payment held for review paid for (exit 0 granted, 1 refused)."""
    try:
        result = grant_held(reference, actor="cli:orders-grant")
    except TiffinError as exc:
        if as_json:
            click.echo(json.dumps({"reference": reference, "granted": False, "error": exc.code,
                                   "detail": exc.detail}, indent=2))
            click.get_current_context().exit(1)
        raise click.ClickException(str(exc)) from exc
    order = result.order
    if as_json:
        return click.echo(json.dumps({"reference": order.reference, "granted": True,
                                      "order_status": order.status}, indent=2))
    click.echo(f"Granted {reference}: order is {order.status}.")
