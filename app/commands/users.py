"""`flask users grant-operator|revoke-operator EMAIL`: who may use the operator console."""
import click
from flask.cli import with_appcontext

from app.models.user import ROLE_OPERATOR, ROLE_SHOPPER
from app.services.accounts import UnknownUser, set_role


@click.group("users")
def users_group():
    """Manage accounts' roles."""


def _set_role(email: str, role: str) -> None:
    try:
        user, before = set_role(email, role, actor="cli:users")
    except UnknownUser as exc:
        raise click.ClickException(f"no account with email {exc}") from exc
    if before == role:
        click.echo(f"{user.email} is already {role}; nothing changed.")
    else:
        click.echo(f"{user.email}: {before} -> {role}.")


@users_group.command("grant-operator")
@click.argument("email")
@with_appcontext
def grant_operator_command(email):
    """Let EMAIL use the operator console /ops/ (audited). Exit 1: no such account."""
    _set_role(email, ROLE_OPERATOR)


@users_group.command("revoke-operator")
@click.argument("email")
@with_appcontext
def revoke_operator_command(email):
    """Take the operator role from EMAIL (audited). Exit 1: no such account."""
    _set_role(email, ROLE_SHOPPER)
