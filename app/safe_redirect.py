"""`next` redirects that can only point inside this site."""
from urllib.parse import urlparse


def safe_next(target: str | None, default: str) -> str:
    if not target:
        return default
    parsed = urlparse(target)
    # Only a path on this site: no scheme, no host, and not "//evil" or "/\\evil".
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    return target
