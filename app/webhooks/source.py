"""Where a webhook came from, and whether we accept it from there.

The client address is Werkzeug's remote_addr, which ProxyFix rewrites from
X-Forwarded-For only through TRUSTED_PROXY_COUNT proxies. Signature
verification is never optional; this check comes on top of it.
"""
from __future__ import annotations

import ipaddress
import logging

from flask import current_app, request

from app.errors import TiffinError

log = logging.getLogger("tiffin.webhooks.source")


def client_address() -> str:
    return request.remote_addr or ""


def allowed_networks(setting: str, gateway: str) -> list | None:
    """Parse WEBHOOK_ALLOWED_IPS ("stripe=3.18.12.0/24,3.130.192.0/24;razorpay=52.66.0.0/16").

    Returns None when no list is configured for this gateway (any source allowed).
    Raises ValueError for a malformed setting (checked at start-up by app.security).
    """
    return parse_allowed_ips(setting).get(gateway)


def parse_allowed_ips(setting: str) -> dict[str, list]:
    """{gateway: [networks]} from WEBHOOK_ALLOWED_IPS; ValueError names a bad part."""
    parsed: dict[str, list] = {}
    for part in (setting or "").split(";"):
        if not part.strip():
            continue
        name, sep, cidrs = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"WEBHOOK_ALLOWED_IPS part {part.strip()!r} is not gateway=cidr,cidr")
        try:
            parsed[name.strip()] = [ipaddress.ip_network(c.strip(), strict=False)
                                    for c in cidrs.split(",") if c.strip()]
        except ValueError as exc:
            raise ValueError(f"WEBHOOK_ALLOWED_IPS for {name.strip()}: {exc}") from exc
    return parsed


def check_source(gateway: str, address: str) -> None:
    """Raise WEBHOOK_SOURCE_FORBIDDEN (403, logged) for a source we do not accept."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise TiffinError("WEBHOOK_SOURCE_FORBIDDEN", f"{gateway}: unparseable source {address!r}")
    if getattr(ip, "ipv4_mapped", None) is not None:  # ::ffff:1.2.3.4 from a dual-stack socket
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        if current_app.config["ALLOW_LOCALHOST_WEBHOOKS"]:
            return
        raise TiffinError("WEBHOOK_SOURCE_FORBIDDEN",
                          f"{gateway}: loopback source {address}, ALLOW_LOCALHOST_WEBHOOKS off")
    networks = allowed_networks(current_app.config["WEBHOOK_ALLOWED_IPS"], gateway)
    if networks is not None and not any(ip in net for net in networks):
        raise TiffinError("WEBHOOK_SOURCE_FORBIDDEN", f"{gateway}: source {address} not allowed")
