"""Request-body caps, security headers, production cookie/CSRF refusals, and a log
filter for secrets.

`register_security(app)` is called once from create_app. The CSP allows only
this site plus the gateways' hosted checkout scripts and frames:
Razorpay Checkout (script from checkout.razorpay.com, frames from
api.razorpay.com) and Stripe (js.stripe.com, checkout.stripe.com).
"""
from __future__ import annotations

import logging
import re

from flask import Flask, current_app, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import RequestEntityTooLarge

from app.config import ConfigError
from app.probes import PATHS as PROBE_PATHS
from app.webhooks import PATH_PREFIX

CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'", "https://checkout.razorpay.com", "https://js.stripe.com"],
    # Razorpay's overlay adds <style> elements; our own templates use no inline style.
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:", "https://*.razorpay.com", "https://*.stripe.com"],
    "font-src": ["'self'", "data:"],
    "connect-src": ["'self'", "https://api.razorpay.com", "https://lumberjack.razorpay.com",
                    "https://api.stripe.com"],
    "frame-src": ["https://api.razorpay.com", "https://checkout.razorpay.com",
                  "https://js.stripe.com", "https://hooks.stripe.com",
                  "https://checkout.stripe.com"],
    # Checkout answers a form POST with a redirect to the gateway's hosted page.
    "form-action": ["'self'", "https://checkout.stripe.com", "https://api.razorpay.com"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'self'"],
    "object-src": ["'none'"],
}
CONTENT_SECURITY_POLICY = "; ".join(f"{k} {' '.join(v)}" for k, v in CSP.items())
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": ('camera=(), microphone=(), geolocation=(), '
                           'payment=(self "https://js.stripe.com" "https://api.razorpay.com")'),
    "Cross-Origin-Opener-Policy": "same-origin-allow-popups",
}
HSTS = "max-age=31536000; includeSubDomains"


class ShopperSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, except on gateway callbacks to /webhooks/: a gateway
    carries no shopper's cookie, so those requests neither read nor set one (and each
    delivery skips building the cookie signer). Probes (/healthz, /readyz, /metrics) the same."""

    def open_session(self, app, request):
        if request.path.startswith(PATH_PREFIX) or request.path in PROBE_PATHS:
            return self.make_null_session(app)
        return super().open_session(app, request)


def cap_request_body() -> None:
    """Read the body, up to its cap, before anything else looks at the request.

    So an oversized body is 413 REQUEST_TOO_LARGE on every route — with or without
    Content-Length, chunked included — even one that would redirect without reading
    it, and before a rate-limit key or the CSRF check parses a form. Webhooks are
    capped at WEBHOOK_MAX_BODY_BYTES, everything else at MAX_CONTENT_LENGTH.
    """
    is_webhook = request.path.startswith(PATH_PREFIX)
    cap = current_app.config["WEBHOOK_MAX_BODY_BYTES" if is_webhook else "MAX_CONTENT_LENGTH"]
    # Werkzeug refuses a Content-Length over the limit, but stops reading a body without
    # one (chunked) at the limit without complaint: read one byte more to tell the two apart.
    request.max_content_length = cap + 1
    if len(request.get_data(cache=True)) > cap:
        raise RequestEntityTooLarge()
    if not is_webhook:
        request.form  # noqa: B018 - parsed from the cached body: form limits are a 413 here too


def register_security(app: Flask) -> None:
    """Cap request bodies, refuse unsafe production settings, add security headers,
    redact secrets in logs."""
    check_security_config(app.config)
    app.session_interface = ShopperSessionInterface()
    # Right after the request id is set (app.logs registers first, in configure_logging) and
    # before the extensions' hooks: the CSRF check and a rate-limit key may read the form.
    hooks = app.before_request_funcs.setdefault(None, [])
    hooks.insert(1 if hooks else 0, cap_request_body)

    defaults = list(HEADERS.items())
    if app.config["TIFFIN_ENV"] == "production":
        defaults.append(("Strict-Transport-Security", HSTS))

    @app.after_request
    def _security_headers(response):
        # One pass over the response's headers: a view's own value wins (as setdefault),
        # without a scan per default header on every response, webhooks included.
        present = {name.lower() for name in response.headers.keys()}
        for name, value in defaults:
            if name.lower() not in present:
                response.headers.add(name, value)
        return response

    install_log_redaction()


def check_security_config(cfg) -> None:
    """Raise ConfigError for a malformed allow-list, or insecure cookies / no CSRF in production."""
    from app.services.health import allowed_metrics_networks
    from app.webhooks.source import parse_allowed_ips

    problems = []
    try:
        parse_allowed_ips(cfg.get("WEBHOOK_ALLOWED_IPS", ""))
    except ValueError as exc:
        problems.append(str(exc))
    try:
        allowed_metrics_networks(cfg.get("METRICS_ALLOWED_IPS", ""))
    except ValueError as exc:
        problems.append(f"METRICS_ALLOWED_IPS: {exc}")
    if cfg.get("TIFFIN_ENV") == "production":
        for name in ("SESSION_COOKIE_SECURE", "REMEMBER_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY",
                     "WTF_CSRF_ENABLED"):
            if not cfg.get(name):
                problems.append(f"{name} must be on in production")
    if problems:
        raise ConfigError("Refusing to start: " + "; ".join(problems))


# Gateway secrets and anything shaped like a card number never reach the logs.
_REDACTIONS = [
    (re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{8,}"), r"\1_\2_[REDACTED]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9]{8,}"), "whsec_[REDACTED]"),
    (re.compile(r"\b(rzp_(?:live|test)_)[A-Za-z0-9]{6,}"), r"\1[REDACTED]"),
    (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), "[CARD REDACTED]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets and card-like numbers removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem, not ours
            return True
        cleaned = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction() -> None:
    """Attach the filter to every handler on the root logger (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
