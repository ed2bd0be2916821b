"""Move a paid order recorded against the wrong user to the right one.

Wraps `flask fix payment-user-mismatch`; run with --help for the options and exit codes.
"""
from _cli import run

if __name__ == "__main__":
    run('fix', 'payment-user-mismatch')
