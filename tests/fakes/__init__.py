"""Local stand-ins for gateways, shared by test packages (see tests/fakes/stripe.py)."""
