"""Fulfil payments the gateways took but we never recorded (missed webhooks).

Wraps `flask reconcile`; run with --help for the options and exit codes.
"""
from _cli import run

if __name__ == "__main__":
    run('reconcile')
