"""Failed sign-ins are throttled per account and per address (Flask-Limiter).

Only failures count: both limits are tested before the view runs and deducted after it
only when the view marked the attempt as failed (`deduct_when`), so a shopper who signs in
correctly spends nothing. Per account, LOGIN_ACCOUNT_RATE_LIMIT (5 per 15 minutes) stops
anyone guessing one account's password, whoever's the email is (unknown ones too, so the
answer never tells which exist). Per address, LOGIN_ADDRESS_RATE_LIMIT is generous (100 per
hour): many Indian mobile shoppers share one carrier address and must not lock each other
out, while one machine cycling through many accounts is still stopped.
"""
from __future__ import annotations

from flask import current_app, request
from flask_limiter.util import get_remote_address

from app.extensions import limiter
from app.services.accounts import normalise_email


# Kept in the WSGI environ, which is this request's own (flask.g lives as long as the app
# context, which may span several requests, e.g. in tests).
_FAILED = "tiffin.login_failed"


def note_failed_login() -> None:
    """Mark this request's sign-in as failed: it then counts against both limits."""
    request.environ[_FAILED] = True


def _login_failed(_response) -> bool:
    return request.environ.get(_FAILED, False)


def _account_key() -> str:
    return "login-account:" + normalise_email(request.form.get("email", ""))


def _address_key() -> str:
    return "login-address:" + get_remote_address()


per_account = limiter.limit(lambda: current_app.config["LOGIN_ACCOUNT_RATE_LIMIT"],
                            key_func=_account_key, deduct_when=_login_failed, methods=["POST"])
per_address = limiter.limit(lambda: current_app.config["LOGIN_ADDRESS_RATE_LIMIT"],
                            key_func=_address_key, deduct_when=_login_failed, methods=["POST"])
