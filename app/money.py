"""Money is integer minor units plus an ISO 4217 currency code; people read it
formatted by Babel for the shop's locale (SHOP_LOCALE), and dates and times in
the shop's time zone (SHOP_TIMEZONE)."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, get_currency_precision
from flask import current_app, has_app_context

DEFAULT_LOCALE = "en_IN"
DEFAULT_TIMEZONE = "Asia/Kolkata"
# Named styles of the `datefmt` filter (Babel patterns).
DATE_STYLES = {"date": "d MMM y", "datetime": "d MMM y, h:mm a zzz", "time": "h:mm a zzz"}


def _setting(name: str, default: str) -> str:
    return (current_app.config.get(name) if has_app_context() else None) or default


def minor_unit_digits(currency: str) -> int:
    """Digits after the decimal point in `currency` (JPY 0, INR 2, KWD 3), from Babel's data."""
    return get_currency_precision(currency.upper())


def to_major(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-minor_unit_digits(currency))


def format_money(amount_minor: int, currency: str, locale: str | None = None) -> str:
    """₹1,23,456.00 for 12345600 INR in en_IN: Babel's symbol, grouping and minor units."""
    return format_currency(to_major(amount_minor, currency), currency.upper(),
                           locale=locale or _setting("SHOP_LOCALE", DEFAULT_LOCALE))


def format_when(value: datetime | date | None, style: str = "date") -> str:
    """A date or moment as the shop's locale writes it, in the shop's time zone.

    `style` is "date", "datetime", "time" or a Babel pattern. A strftime-style
    string (older templates) means "datetime" when it shows the hour, else "date".
    """
    if value is None:
        return "—"
    if "%" in style:
        style = "datetime" if "%H" in style or "%I" in style else "date"
    pattern = DATE_STYLES.get(style, style)
    locale = _setting("SHOP_LOCALE", DEFAULT_LOCALE)
    if not isinstance(value, datetime):
        return format_date(value, pattern, locale=locale)
    if value.tzinfo is None:  # stored times are UTC (app.models.types.UTCDateTime)
        value = value.replace(tzinfo=timezone.utc)
    return format_datetime(value, pattern, tzinfo=_setting("SHOP_TIMEZONE", DEFAULT_TIMEZONE),
                           locale=locale)
