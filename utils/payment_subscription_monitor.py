"""Find payment and subscription problems; cron runs it every 5 minutes with --alert.

Wraps `flask monitor check`; run with --help for the options and exit codes.
"""
from _cli import run

if __name__ == "__main__":
    run('monitor', 'check')
