"""Shopper flows through the Flask test client, shared by the tests."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

from tests.conftest import form_token


def start_checkout(client, slug="lunch-monthly", gateway="test"):
    """Open the plan page and submit its checkout form; returns the response."""
    page = client.get(f"/plans/{slug}")
    assert page.status_code == 200, page.text
    token = form_token(page.text, "checkout_token")
    return client.post(f"/checkout/{slug}", data={"gateway": gateway, "checkout_token": token})


def gateway_page(client, slug="lunch-monthly"):
    """Start a checkout and return the test gateway's hosted page path."""
    r = start_checkout(client, slug)
    assert r.status_code == 303, r.text
    assert r.location.startswith("/test-gateway/pay/")
    return r.location


def pay(client, slug="lunch-monthly", outcome="pay", reason=None, follow=True):
    """Buy on the test gateway with the chosen outcome."""
    path = gateway_page(client, slug)
    data = {"outcome": outcome}
    if reason:
        data["reason"] = reason
    return client.post(path, data=data, follow_redirects=follow)


def order_reference(html: str) -> str | None:
    m = re.search(r"TF-[0-9A-F]{12}", html)
    return m.group(0) if m else None


def return_params(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
