"""Unbound Flask extensions; create_app binds them."""
import logging
import os

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData

# Named constraints so migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


def _rate_limit_key():
    """Per signed-in user where there is one, otherwise per client address."""
    from flask_login import current_user

    if current_user and current_user.is_authenticated:
        return f"user:{current_user.id}"
    return get_remote_address()


# Storage is chosen in create_app (Redis when REDIS_URL is set). Errors from the
# storage are swallowed and an in-memory fallback used, so a Redis outage never
# blocks a checkout.
limiter = Limiter(key_func=_rate_limit_key, default_limits=[], swallow_errors=True,
                  in_memory_fallback_enabled=True)


class _WarnOnceOnMemoryFallback(logging.Filter):
    """Flask-Limiter logs when its storage fails and it counts in memory instead; say once
    per process what that does to the limits (each worker counts on its own)."""

    warned_pid: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if ("falling back to in-memory storage" in record.getMessage()
                and _WarnOnceOnMemoryFallback.warned_pid != os.getpid()):
            _WarnOnceOnMemoryFallback.warned_pid = os.getpid()
            logging.getLogger("tiffin.ratelimit").warning(
                "rate-limit storage (REDIS_URL) unreachable: counting in this process's memory "
                "until it is back, so every limit is per worker (CHECKOUT_RATE_LIMIT 5 per minute "
                "allows 5 x workers a minute; the sign-in limits likewise)")
        return True


limiter.logger.addFilter(_WarnOnceOnMemoryFallback())


@limiter.request_filter
def _webhooks_are_never_throttled() -> bool:
    """Gateways retry on their own schedule; throttling them would only delay payments.
    Probes (/healthz, /readyz, /metrics) are never throttled either: a load balancer
    that is refused takes the shop out of service.
    (A filter rather than an exemption: it ends the limiter's work before it starts.)"""
    from flask import request

    return request.blueprint in ("webhooks", "probes")
