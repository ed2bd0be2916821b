"""Registers every Flask CLI command (cron jobs and operator tools)."""
from app.commands.catalogue import seed_command
from app.commands.notifications import notifications_group
from app.commands.ops import COMMANDS as OPS_COMMANDS
from app.commands.orders import orders_group
from app.commands.razorpay import razorpay_group
from app.commands.stripe import stripe_group
from app.commands.users import users_group
from app.commands.webhooks import webhooks_group

COMMANDS = [seed_command, webhooks_group, notifications_group, stripe_group]
COMMANDS += [razorpay_group, orders_group, users_group]
COMMANDS += OPS_COMMANDS


def register(app) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)
