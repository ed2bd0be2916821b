"""Create missing subscriptions for paid orders and repair status drift.

Wraps `flask fix subscriptions`; run with --help for the options and exit codes.
"""
from _cli import run

if __name__ == "__main__":
    run('fix', 'subscriptions')
