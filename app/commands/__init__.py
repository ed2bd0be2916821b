"""Flask CLI command groups, one module each; app/cli.py registers them."""
