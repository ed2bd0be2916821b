"""Settings from the environment (and a `.env` file if present).

Every setting is read in one place so an operator can find it; production
refuses to start with unsafe values and names the setting that is wrong.
"""
from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "dev-only-insecure-secret-key"
DEV_TEST_GATEWAY_SECRET = "dev-only-test-gateway-secret"


class ConfigError(RuntimeError):
    """A setting is unsafe or missing; the message names it."""


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def load_config(env_name: str | None = None) -> dict:
    """Build the settings dict for `env_name` (development, testing, production)."""
    load_dotenv(BASE_DIR / ".env", override=False)
    env = (env_name or os.environ.get("TIFFIN_ENV") or "development").lower()
    if env not in {"development", "testing", "production"}:
        raise ConfigError(f"TIFFIN_ENV must be development, testing or production, got {env!r}")
    is_prod = env == "production"
    get = os.environ.get

    stripe_secret = get("STRIPE_SECRET_KEY", "")
    razorpay_key_id = get("RAZORPAY_KEY_ID", "")
    real_gateway_keys = bool(stripe_secret or razorpay_key_id)
    default_db = f"sqlite:///{BASE_DIR / 'instance' / 'tiffin.db'}"

    cfg = {
        "TIFFIN_ENV": env,
        "TESTING": env == "testing",
        "SECRET_KEY": get("SECRET_KEY") or ("" if is_prod else DEV_SECRET_KEY),
        "SQLALCHEMY_DATABASE_URI": get("DATABASE_URL") or default_db,
        "SQLALCHEMY_ENGINE_OPTIONS": {},  # connections are pinged when idle: app/db_pool.py
        "PORT": _int("PORT", 5000),
        # In development the address follows PORT (`PORT=8000 make run`) unless set.
        "APP_BASE_URL": (get("APP_BASE_URL") or "http://127.0.0.1:"
                         + str(_int("PORT", 5000) if env == "development" else 5000)).rstrip("/"),
        "SUPPORT_EMAIL": get("SUPPORT_EMAIL", "support@tiffin.example"),
        # How amounts, dates and times read, in pages and emails alike (Babel).
        "SHOP_LOCALE": get("SHOP_LOCALE") or "en_IN",
        "SHOP_TIMEZONE": get("SHOP_TIMEZONE") or "Asia/Kolkata",
        "GRACE_PERIOD_DAYS": _int("GRACE_PERIOD_DAYS", 3),
        # Checkout: how long a started checkout can be paid; how often the pending
        # page may ask the gateway about one order; how long it refreshes itself.
        "CHECKOUT_EXPIRY_MINUTES": _int("CHECKOUT_EXPIRY_MINUTES", 60),
        "GATEWAY_STATUS_CHECK_SECONDS": _int("GATEWAY_STATUS_CHECK_SECONDS", 30),
        "PENDING_REFRESH_MINUTES": _int("PENDING_REFRESH_MINUTES", 5),
        # Gateways
        "TEST_GATEWAY_ENABLED": _bool(get("TEST_GATEWAY_ENABLED"),
                                      default=(not is_prod and not real_gateway_keys)),
        "TEST_GATEWAY_WEBHOOK_SECRET": get("TEST_GATEWAY_WEBHOOK_SECRET")
        or ("" if is_prod else DEV_TEST_GATEWAY_SECRET),
        "TEST_GATEWAY_WEBHOOK_URL": get("TEST_GATEWAY_WEBHOOK_URL", ""),
        "TEST_GATEWAY_WEBHOOK_DELAY_SECONDS": float(get("TEST_GATEWAY_WEBHOOK_DELAY_SECONDS") or 0),
        "STRIPE_SECRET_KEY": stripe_secret,
        "STRIPE_PUBLISHABLE_KEY": get("STRIPE_PUBLISHABLE_KEY", ""),
        "STRIPE_WEBHOOK_SECRET": get("STRIPE_WEBHOOK_SECRET", ""),
        "STRIPE_API_BASE": get("STRIPE_API_BASE", "https://api.stripe.com"),
        "STRIPE_PRICE_IDS": get("STRIPE_PRICE_IDS", ""),
        "RAZORPAY_KEY_ID": razorpay_key_id,
        "RAZORPAY_KEY_SECRET": get("RAZORPAY_KEY_SECRET", ""),
        "RAZORPAY_WEBHOOK_SECRET": get("RAZORPAY_WEBHOOK_SECRET", ""),
        "RAZORPAY_API_BASE": get("RAZORPAY_API_BASE", "https://api.razorpay.com"),
        # Webhook intake
        "WEBHOOK_ALLOWED_IPS": get("WEBHOOK_ALLOWED_IPS", ""),
        "ALLOW_LOCALHOST_WEBHOOKS": _bool(get("ALLOW_LOCALHOST_WEBHOOKS"), default=not is_prod),
        "TRUSTED_PROXY_COUNT": _int("TRUSTED_PROXY_COUNT", 0),
        "WEBHOOK_MAX_BODY_BYTES": _int("WEBHOOK_MAX_BODY_BYTES", 256 * 1024),
        # Every other request body (forms, gateway callbacks); larger ones get 413.
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 1024 * 1024),
        "WEBHOOK_MAX_ATTEMPTS": _int("WEBHOOK_MAX_ATTEMPTS", 8),
        "WEBHOOK_STUCK_AFTER_SECONDS": _int("WEBHOOK_STUCK_AFTER_SECONDS", 120),
        # Redis is optional: rate-limit counters and live account updates.
        "REDIS_URL": get("REDIS_URL", ""),
        "RATELIMIT_STORAGE_URI": get("REDIS_URL") or "memory://",
        "RATELIMIT_ENABLED": _bool(get("RATELIMIT_ENABLED"), default=True),
        "CHECKOUT_RATE_LIMIT": get("CHECKOUT_RATE_LIMIT", "5 per minute"),
        # Failed sign-ins only (app/auth/throttle.py).
        "LOGIN_ACCOUNT_RATE_LIMIT": get("LOGIN_ACCOUNT_RATE_LIMIT", "5 per 15 minutes"),
        "LOGIN_ADDRESS_RATE_LIMIT": get("LOGIN_ADDRESS_RATE_LIMIT", "100 per hour"),
        # Mail (the outbox sends through SMTP)
        "MAIL_SERVER": get("MAIL_SERVER", "localhost"),
        "MAIL_PORT": _int("MAIL_PORT", 25),
        "MAIL_USERNAME": get("MAIL_USERNAME", ""),
        "MAIL_PASSWORD": get("MAIL_PASSWORD", ""),
        "MAIL_USE_TLS": _bool(get("MAIL_USE_TLS")),
        # Development without a MAIL_SERVER: mail is "sent" to the /dev/mailbox page.
        "DEV_MAILBOX": env == "development" and not get("MAIL_SERVER"),
        # Try each email right after the change that queued it commits (cron stays the backstop).
        "MAIL_SEND_PROMPTLY": _bool(get("MAIL_SEND_PROMPTLY"), default=True),
        "MAIL_DEFAULT_SENDER": get("MAIL_DEFAULT_SENDER", "Tiffin <no-reply@tiffin.example>"),
        "MAIL_TIMEOUT_SECONDS": _int("MAIL_TIMEOUT_SECONDS", 10),
        "NOTIFICATION_MAX_ATTEMPTS": _int("NOTIFICATION_MAX_ATTEMPTS", 10),
        # Logs: JSON lines by default (LOG_FORMAT=text for plain lines while developing)
        "LOG_FORMAT": get("LOG_FORMAT", "json").lower(),
        "LOG_LEVEL": get("LOG_LEVEL", "INFO").upper(),
        # /metrics: from these addresses/networks, or with `Authorization: Bearer METRICS_TOKEN`
        "METRICS_ALLOWED_IPS": get("METRICS_ALLOWED_IPS", ""),
        "METRICS_TOKEN": get("METRICS_TOKEN", ""),
        # The console's "run the monitor now" works in a background thread; tests run it inline.
        "OPS_MONITOR_INLINE": _bool(get("OPS_MONITOR_INLINE"), default=env == "testing"),
        # Alerts
        "ALERT_EMAIL": get("ALERT_EMAIL", ""),
        "ALERT_WEBHOOK_URL": get("ALERT_WEBHOOK_URL", ""),
        # Monitor thresholds (see README "Operations")
        "ALERT_REMINDER_HOURS": _int("ALERT_REMINDER_HOURS", 24),
        "MONITOR_PAID_GRACE_MINUTES": _int("MONITOR_PAID_GRACE_MINUTES", 10),
        "MONITOR_WEBHOOK_STUCK_MINUTES": _int("MONITOR_WEBHOOK_STUCK_MINUTES", 15),
        "MONITOR_WEBHOOK_QUIET_HOURS": _int("MONITOR_WEBHOOK_QUIET_HOURS", 6),
        "MONITOR_AUTHORIZED_ALERT_HOURS": _int("MONITOR_AUTHORIZED_ALERT_HOURS", 48),
        "MONITOR_OUTBOX_STUCK_MINUTES": _int("MONITOR_OUTBOX_STUCK_MINUTES", 30),
        "MONITOR_PENDING_ORDER_HOURS": _int("MONITOR_PENDING_ORDER_HOURS", 24),
        "MONITOR_MAX_FINDINGS_PER_CHECK": _int("MONITOR_MAX_FINDINGS_PER_CHECK", 1000),
        # Cookies
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": is_prod,
        "REMEMBER_COOKIE_SECURE": is_prod,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "WTF_CSRF_ENABLED": _bool(get("WTF_CSRF_ENABLED"), default=True),
    }
    return cfg


def enabled_gateways(cfg: dict) -> list[str]:
    """Gateways this deployment offers, in the order the shop shows them."""
    names = []
    if cfg.get("STRIPE_SECRET_KEY"):
        names.append("stripe")
    if cfg.get("RAZORPAY_KEY_ID"):
        names.append("razorpay")
    if cfg.get("TEST_GATEWAY_ENABLED"):
        names.append("test")
    return names


def _secrets_problems(cfg: dict) -> list[str]:
    problems = []
    if cfg.get("STRIPE_SECRET_KEY"):
        for name in ("STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"):
            if not cfg.get(name):
                problems.append(f"{name} is not set but Stripe is enabled (STRIPE_SECRET_KEY is set)")
    if cfg.get("RAZORPAY_KEY_ID"):
        for name in ("RAZORPAY_KEY_SECRET", "RAZORPAY_WEBHOOK_SECRET"):
            if not cfg.get(name):
                problems.append(f"{name} is not set but Razorpay is enabled (RAZORPAY_KEY_ID is set)")
    if cfg.get("TEST_GATEWAY_ENABLED") and not cfg.get("TEST_GATEWAY_WEBHOOK_SECRET"):
        problems.append("TEST_GATEWAY_WEBHOOK_SECRET is not set but the test gateway is enabled")
    return problems


def _display_problems(cfg: dict) -> list[str]:
    from babel import Locale, UnknownLocaleError
    from babel.dates import get_timezone

    problems = []
    try:
        Locale.parse(cfg.get("SHOP_LOCALE") or "en_IN")
    except (UnknownLocaleError, ValueError):
        problems.append(f"SHOP_LOCALE {cfg.get('SHOP_LOCALE')!r} is not a locale Babel knows (e.g. en_IN)")
    try:
        get_timezone(cfg.get("SHOP_TIMEZONE") or "Asia/Kolkata")
    except LookupError:
        problems.append(f"SHOP_TIMEZONE {cfg.get('SHOP_TIMEZONE')!r} is not a time zone (e.g. Asia/Kolkata)")
    if cfg.get("DEV_MAILBOX") and cfg.get("TIFFIN_ENV") != "development":
        problems.append("DEV_MAILBOX is for development only (mail would never leave the shop)")
    return problems


def validate_config(cfg: dict) -> None:
    """Raise ConfigError naming every unsafe setting (strict only in production)."""
    problems = _secrets_problems(cfg) + _display_problems(cfg)
    if cfg["TIFFIN_ENV"] == "production":
        secret = cfg.get("SECRET_KEY") or ""
        if not secret or secret == DEV_SECRET_KEY:
            problems.append("SECRET_KEY is missing or the development default")
        elif len(secret) < 32:
            problems.append("SECRET_KEY is shorter than 32 characters")
        if cfg.get("TEST_GATEWAY_ENABLED"):
            problems.append("TEST_GATEWAY_ENABLED must be off in production")
        if cfg.get("TEST_GATEWAY_WEBHOOK_SECRET") == DEV_TEST_GATEWAY_SECRET:
            problems.append("TEST_GATEWAY_WEBHOOK_SECRET is the development default")
        if cfg.get("ALLOW_LOCALHOST_WEBHOOKS"):
            problems.append("ALLOW_LOCALHOST_WEBHOOKS must be off in production")
        if not enabled_gateways(cfg):
            problems.append("no payment gateway is configured (set STRIPE_SECRET_KEY or RAZORPAY_KEY_ID)")
        if not cfg.get("APP_BASE_URL", "").startswith("https://"):
            problems.append("APP_BASE_URL must be an https:// address in production")
    if problems:
        raise ConfigError("Refusing to start: " + "; ".join(problems))
