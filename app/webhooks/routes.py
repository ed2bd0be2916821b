"""POST /webhooks/<gateway>: verify, store, then act.

2xx once the event is stored, whatever its handler does; 5xx only when it could
not be stored (so the gateway redelivers); 400 for a bad signature or body; 403
for a source outside WEBHOOK_ALLOWED_IPS; 413 over WEBHOOK_MAX_BODY_BYTES.
"""
import logging

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from app.errors import render_error
from app.extensions import csrf, db
from app.gateways import get_gateway
from app.services.webhook_inbox import process_event, store_event
from app.webhooks import PATH_PREFIX
from app.webhooks.source import check_source, client_address

bp = Blueprint("webhooks", __name__, url_prefix=PATH_PREFIX.rstrip("/"))
log = logging.getLogger("tiffin.webhooks")


@bp.post("/<gateway>")
@csrf.exempt
def receive(gateway):
    """Receive one gateway event."""
    source = client_address()
    check_source(gateway, source)
    # The body was read, up to WEBHOOK_MAX_BODY_BYTES (else 413), by app.security.cap_request_body.
    event = get_gateway(gateway).parse_webhook(request.get_data(), request.headers)
    try:
        stored = store_event(gateway, event, source)
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("could not store %s event %s; answering 503 so it is redelivered",
                      gateway, event.event_id)
        return render_error("WEBHOOK_STORE_FAILED")
    if stored is None:  # stored before: acknowledged, not processed again
        return jsonify(received=True, duplicate=True, status="duplicate"), 200
    try:
        status = process_event(stored, source_address=source)
    except Exception:  # stored already: the retry command finishes it when its lease ends
        db.session.rollback()
        log.exception("processing %s event %s failed after it was stored", gateway,
                      event.event_id)
        status = stored.status
    return jsonify(received=True, duplicate=False, status=status), 200
