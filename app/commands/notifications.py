"""`flask notifications send`: deliver the outbox over SMTP (cron, any number of hosts)."""
import click
from flask.cli import with_appcontext

from app.services import notifications


@click.group("notifications")
def notifications_group():
    """Send outbox emails."""


@notifications_group.command("send")
@click.option("--limit", default=100, show_default=True, help="Most emails to claim this run.")
@with_appcontext
def send_command(limit):
    """Send due emails. Exit 1 when the mail server was unreachable or an email failed."""
    report = notifications.send_pending(limit)
    click.echo(f"Sent {report.sent}, retrying later {report.retrying}, given up {report.failed}.")
    if report.server_error:
        click.echo(f"Mail server unreachable: {report.server_error}", err=True)
    if report.server_error or report.retrying or report.failed:
        raise SystemExit(1)
