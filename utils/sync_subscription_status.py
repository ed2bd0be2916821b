"""Recompute each user's status and credits from the subscription rows.

Wraps `flask fix sync-status`; run with --help for the options and exit codes.
"""
from _cli import run

if __name__ == "__main__":
    run('fix', 'sync-status')
