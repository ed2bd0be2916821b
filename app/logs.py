"""Logs as JSON lines, each carrying the request id and, once known, the order and event.

The request id is made when a request starts and is the support reference an
error page shows, so one search for it finds every line of that request. Code
that learns which order or gateway event it is working on calls `bind(...)`;
every later line of the request (or CLI run) carries those fields. A record
factory adds them, so every handler and logger gets them, ours or a library's.
Secrets and card-adjacent fields are redacted in the rendered line.
"""
from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid

from pythonjsonlogger.json import JsonFormatter

from app.security import redact

CONTEXT_FIELDS = ("request_id", "order_reference", "gateway_event_id")
_context: contextvars.ContextVar[dict] = contextvars.ContextVar("tiffin_log_context", default={})
# Field names whose values never reach a log line, whatever a caller passes as `extra`.
_SENSITIVE_KEY = re.compile(r"(password|secret|token|authorization|cookie|card|cvv|cvc|"
                            r"expiry|exp_month|exp_year|pan|vpa|account_number)", re.I)
REDACTED = "[REDACTED]"
_STANDARD = ("asctime", "levelname", "name", "message")


def new_request_id() -> str:
    """The support reference format shoppers read out to support."""
    return "REF-" + uuid.uuid4().hex[:10].upper()


def start_request() -> str:
    """A fresh context for a new request; returns its id."""
    request_id = new_request_id()
    _context.set({"request_id": request_id})
    return request_id


def bind(**fields) -> None:
    """Attach fields (order_reference, gateway_event_id) to every later line of this context;
    a field given as None is dropped (a new event in a CLI run must not carry the last order)."""
    merged = {**_context.get(), **fields}
    _context.set({k: v for k, v in merged.items() if v is not None})


def current(name: str) -> str | None:
    return _context.get().get(name)


def clear() -> None:
    _context.set({})


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_tiffin", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        context = _context.get()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name))
        return record

    factory._tiffin = True
    logging.setLogRecordFactory(factory)


class RedactingJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, with sensitive keys dropped and secrets masked."""

    def process_log_record(self, log_data: dict) -> dict:
        for key in list(log_data):
            if _SENSITIVE_KEY.search(key) and key not in CONTEXT_FIELDS:
                log_data[key] = REDACTED
        return super().process_log_record(log_data)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def json_formatter() -> RedactingJsonFormatter:
    return RedactingJsonFormatter(
        " ".join(f"%({name})s" for name in (*_STANDARD, *CONTEXT_FIELDS)),
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_default=str, datefmt="%Y-%m-%dT%H:%M:%S%z")


def configure(app) -> None:
    """JSON lines on stderr (LOG_FORMAT=text for plain lines), request ids on every line."""
    _install_record_factory()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler._tiffin = True
        root.addHandler(handler)
        root.setLevel(app.config.get("LOG_LEVEL", "INFO"))
    for handler in root.handlers:
        if getattr(handler, "_tiffin", False):
            handler.setFormatter(json_formatter() if app.config.get("LOG_FORMAT") != "text"
                                 else logging.Formatter("%(asctime)s %(levelname)s %(name)s "
                                                        "[%(request_id)s]: %(message)s"))
    _register_request_hooks(app)


def _register_request_hooks(app) -> None:
    from flask import g, request

    request_log = logging.getLogger("tiffin.request")

    @app.before_request
    def _start():
        g.request_id = start_request()
        g.request_started = time.perf_counter()
        reference = (request.view_args or {}).get("reference")
        if reference:
            bind(order_reference=reference)

    @app.after_request
    def _finish(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
            request_log.info("%s %s %s", request.method, request.path, response.status_code,
                             extra={"status": response.status_code, "method": request.method,
                                    "path": request.path, "duration_ms": round(
                                        (time.perf_counter() - g.request_started) * 1000, 1)})
        return response

    @app.teardown_request
    def _end(_exc):
        clear()
