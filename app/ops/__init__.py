"""The operator console under /ops/: see a payment incident, understand it, repair it.

Every route is behind `require_operator` (routes.py), run for the whole blueprint.
"""
