"""Registers every Flask CLI command (cron jobs and operator tools)."""
from app.commands.catalogue import seed_command

COMMANDS = [seed_command]


def register(app) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)
