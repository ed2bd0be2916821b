"""`next` redirects that can only point inside this site."""
from urllib.parse import urlparse


def safe_next(target: str | None, default: str) -> str:
    """`target` if it is a path on this site, else `default`.

    Browsers drop tabs and newlines and read "\\" as "/", so "/\\tevil.com" and
    "/\\\\evil.com" would leave the site: any control character or backslash is refused.
    """
    if not target or any(ord(c) < 0x21 or c == "\x7f" or c == "\\" for c in target):
        return default
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target
