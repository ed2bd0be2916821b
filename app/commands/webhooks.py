"""`flask webhooks retry|replay|list`: the cron job and the operator's tools for the inbox."""
import click
from flask.cli import with_appcontext

from app.models.webhook import EVENT_DEAD, EVENT_FAILED, EVENT_STATUSES
from app.services import webhook_inbox


@click.group("webhooks")
def webhooks_group():
    """Retry, replay and list stored gateway events."""


@webhooks_group.command("retry")
@click.option("--limit", default=50, show_default=True, help="Most events to claim this run.")
@with_appcontext
def retry_command(limit):
    """Re-run failed events whose backoff is due and events stored but never processed.

    Safe on several hosts at once. Exit 1 when an event failed again or was dead-lettered.
    """
    counts = webhook_inbox.retry_due(limit)
    if not counts:
        click.echo("No webhook events due for retry.")
        return
    click.echo("Retried {} event(s): {}".format(
        sum(counts.values()), ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))))
    if counts.get(EVENT_FAILED) or counts.get(EVENT_DEAD):
        raise SystemExit(1)


@webhooks_group.command("replay")
@click.argument("event_id")
@with_appcontext
def replay_command(event_id):
    """Re-run one event (the gateway's event id, or our numeric id) whatever its status."""
    event = webhook_inbox.lookup(event_id)
    if event is None:
        click.echo(f"No stored webhook event {event_id}.", err=True)
        raise SystemExit(2)
    status = webhook_inbox.replay(event)
    click.echo(f"Replayed {event.gateway}:{event.event_id} ({event.event_type}): {status}")
    if status in (EVENT_FAILED, EVENT_DEAD):
        raise SystemExit(1)


@webhooks_group.command("list")
@click.option("--status", type=click.Choice(EVENT_STATUSES), default=None,
              help="Only events in this status.")
@click.option("--limit", default=100, show_default=True)
@with_appcontext
def list_command(status, limit):
    """Show stored events, newest first."""
    events = webhook_inbox.events_with_status(status, limit)
    if not events:
        click.echo(f"No {status or 'stored'} webhook events.")
        return
    for e in events:
        due = e.next_attempt_at.isoformat(timespec="seconds") if e.next_attempt_at else "-"
        error = (e.last_error or "").splitlines()[0][:120] if e.last_error else ""
        click.echo(f"{e.id}\t{e.gateway}:{e.event_id}\t{e.event_type}\t{e.status}\t"
                   f"attempts={e.attempts}\tnext={due}\t{error}")
