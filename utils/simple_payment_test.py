"""One-screen health summary.

Wraps `flask monitor health`; run with --help for the options and exit codes.
"""
from _cli import run

if __name__ == "__main__":
    run('monitor', 'health')
