"""Gateway webhooks: POST /webhooks/<gateway> (routes.py) and one handler per event type."""

# Requests under this path come from gateways, not shoppers: they get JSON errors and no
# cookie session. Checked on the path because both are decided before the URL is routed.
PATH_PREFIX = "/webhooks/"
