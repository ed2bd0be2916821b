"""Money is integer minor units plus an ISO 4217 currency code."""

# Currencies whose minor unit is not 1/100 of the major unit.
_ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "INR": "₹", "JPY": "¥"}


def format_money(amount_minor: int, currency: str) -> str:
    currency = currency.upper()
    symbol = _SYMBOLS.get(currency, currency + " ")
    if currency in _ZERO_DECIMAL:
        return f"{symbol}{amount_minor:,}"
    major, minor = divmod(abs(amount_minor), 100)
    sign = "-" if amount_minor < 0 else ""
    return f"{sign}{symbol}{major:,}.{minor:02d}"
