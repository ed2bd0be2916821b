"""Webhook source checks, body limit, CSRF, `next` redirects, headers, production refusals."""
from __future__ import annotations

import io
import logging

import pytest

from app.config import ConfigError
from app.extensions import limiter
from app.models import User, WebhookEvent
from app.security import CONTENT_SECURITY_POLICY, check_security_config, redact
from tests.conftest import count, form_token, make_app
from tests.pipeline.conftest import event_body, post_webhook

STRANGER = "203.0.113.9"
GATEWAY_NET = "198.51.100.0/24"


def test_disallowed_source_is_403_logged_and_not_stored(app, caplog):
    shop = make_app(WEBHOOK_ALLOWED_IPS=f"test={GATEWAY_NET}")
    client = shop.test_client()

    with caplog.at_level(logging.WARNING, logger="tiffin.errors"):
        refused = post_webhook(client, event_body("pipeline.any"),
                               environ_base={"REMOTE_ADDR": STRANGER})

    assert refused.status_code == 403 and refused.json["error"] == "WEBHOOK_SOURCE_FORBIDDEN"
    assert any("WEBHOOK_SOURCE_FORBIDDEN" in r.getMessage() and STRANGER in r.getMessage()
               for r in caplog.records)
    assert count(WebhookEvent) == 0
    allowed = post_webhook(client, event_body("pipeline.any"),
                           environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert allowed.status_code == 200 and count(WebhookEvent) == 1


def test_loopback_only_with_allow_localhost_webhooks(app):
    closed = make_app(ALLOW_LOCALHOST_WEBHOOKS=False).test_client()
    assert post_webhook(closed, event_body("pipeline.any"),
                        environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403
    assert post_webhook(closed, event_body("pipeline.any"),
                        environ_base={"REMOTE_ADDR": "::1"}).status_code == 403
    assert count(WebhookEvent) == 0


def test_forwarded_for_is_trusted_only_through_configured_proxies(app):
    body = event_body("pipeline.any")
    direct = make_app(WEBHOOK_ALLOWED_IPS=f"test={GATEWAY_NET}", TRUSTED_PROXY_COUNT=0)
    spoofed = direct.test_client().post(
        "/webhooks/test", data=body, environ_base={"REMOTE_ADDR": STRANGER},
        headers=_signed(body, **{"X-Forwarded-For": "198.51.100.7"}))
    assert spoofed.status_code == 403  # no trusted proxy: the header is ignored

    proxied = make_app(WEBHOOK_ALLOWED_IPS=f"test={GATEWAY_NET}", TRUSTED_PROXY_COUNT=1)
    through_proxy = proxied.test_client().post(
        "/webhooks/test", data=body, environ_base={"REMOTE_ADDR": "10.0.0.2"},
        headers=_signed(body, **{"X-Forwarded-For": f"{STRANGER}, 198.51.100.7"}))
    assert through_proxy.status_code == 200  # the one trusted hop named the gateway
    assert count(WebhookEvent, WebhookEvent.source_address == "198.51.100.7") == 1


def _signed(body: bytes, **extra) -> dict:
    from app.gateways import get_gateway

    return {"Content-Type": "application/json",
            "X-Test-Gateway-Signature": get_gateway("test").sign_body(body), **extra}


def test_webhook_body_over_the_limit_is_413(app):
    app.config["WEBHOOK_MAX_BODY_BYTES"] = 512
    client = app.test_client()
    big = event_body("pipeline.any", padding="x" * 2000)

    assert post_webhook(client, big).status_code == 413
    # A chunked body has no Content-Length; the server marks the stream terminated.
    chunked = client.post("/webhooks/test", input_stream=io.BytesIO(big), headers=_signed(big),
                          environ_overrides={"wsgi.input_terminated": True})
    assert chunked.status_code == 413
    assert count(WebhookEvent) == 0
    assert post_webhook(client, event_body("pipeline.any")).status_code == 200


def test_bad_signature_is_400_even_from_an_allowed_source(app, client):
    body = event_body("pipeline.any")
    reply = client.post("/webhooks/test", data=body, headers={
        "Content-Type": "application/json", "X-Test-Gateway-Signature": "0" * 64})
    assert reply.status_code == 400 and count(WebhookEvent) == 0


def test_csrf_is_enforced_on_forms_when_enabled(app):
    shop = make_app(WTF_CSRF_ENABLED=True)
    client = shop.test_client()
    data = {"name": "Asha", "email": "asha@example.com", "password": "correct horse 1",
            "confirm": "correct horse 1"}

    forged = client.post("/register", data=data)

    assert forged.status_code == 400 and count(User) == 0
    assert "FORM_EXPIRED" in forged.text and "nothing was changed" in forged.text
    token = form_token(client.get("/register").text, "csrf_token")
    assert token
    genuine = client.post("/register", data={**data, "csrf_token": token})
    assert genuine.status_code in (302, 303) and count(User) == 1
    assert client.post("/logout").status_code == 400  # signed in, but no token
    # Webhooks are signed, not CSRF-protected: they still arrive.
    assert post_webhook(client, event_body("pipeline.any")).status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x",
                                    "/\\evil.example", "/\t/evil.example", "javascript:alert(1)"])
def test_next_redirect_to_another_site_is_refused(client, auth, target):
    auth.register()
    auth.logout()

    reply = client.post("/login", query_string={"next": target},
                        data={"email": "asha@example.com", "password": "correct horse 1"})

    assert reply.status_code in (302, 303)
    assert reply.location == "/account/"


def test_next_redirect_within_the_site_is_kept(client, auth):
    auth.register()
    auth.logout()
    reply = client.post("/login", query_string={"next": "/plans/lunch-monthly"},
                        data={"email": "asha@example.com", "password": "correct horse 1"})
    assert reply.location == "/plans/lunch-monthly"


def test_webhooks_open_no_session_and_leave_the_shoppers_alone(app, client, auth):
    from flask import session
    from flask.sessions import NullSession

    auth.register()  # the client now holds a signed-in shopper's session cookie
    cookie = client.get_cookie("session").value
    with app.test_request_context("/webhooks/test", method="POST",
                                  headers={"Cookie": f"session={cookie}"}):
        app.preprocess_request()
        assert isinstance(session._get_current_object(), NullSession)
    with app.test_request_context("/account/", headers={"Cookie": f"session={cookie}"}):
        assert session.get("_user_id")  # every other path reads the cookie as before

    reply = post_webhook(client, event_body("test.ping"))
    assert reply.status_code == 200 and "Set-Cookie" not in reply.headers
    assert count(WebhookEvent) == 1
    page = client.get("/account/")
    assert page.status_code == 200 and b"Asha" in page.data


def test_security_headers_allow_the_gateways_checkout(client):
    page = client.get("/")

    csp = page.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert "https://checkout.razorpay.com" in directives["script-src"]
    assert "https://js.stripe.com" in directives["script-src"]
    assert "https://api.razorpay.com" in directives["frame-src"]
    assert "https://checkout.stripe.com" in directives["frame-src"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in page.headers  # not over plain http in dev/test
    assert "Content-Security-Policy" in client.get("/no-such-page").headers


def test_a_views_own_security_header_wins(app, client):
    from flask import make_response

    def framed():
        response = make_response("ok")
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response

    app.add_url_rule("/framed-for-test", view_func=framed)
    page = client.get("/framed-for-test")
    assert page.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"  # the other defaults still added


def _production(**overrides) -> dict:
    cfg = {"TIFFIN_ENV": "production", "SECRET_KEY": "p" * 40, "TEST_GATEWAY_ENABLED": False,
           "TEST_GATEWAY_WEBHOOK_SECRET": "", "STRIPE_SECRET_KEY": "sk_test_pipeline",
           "STRIPE_PUBLISHABLE_KEY": "pk_test_pipeline", "STRIPE_WEBHOOK_SECRET": "whsec_pipeline",
           "APP_BASE_URL": "https://shop.example", "ALLOW_LOCALHOST_WEBHOOKS": False,
           "WTF_CSRF_ENABLED": True, "SESSION_COOKIE_SECURE": True, "REMEMBER_COOKIE_SECURE": True}
    cfg.update(overrides)
    return cfg


def test_production_sets_secure_cookies_and_hsts(app):
    shop = make_app(**_production())
    assert shop.config["SESSION_COOKIE_SECURE"] and shop.config["SESSION_COOKIE_HTTPONLY"]
    assert shop.config["REMEMBER_COOKIE_SECURE"]
    reply = shop.test_client().get("/no-such-page", base_url="https://shop.example")
    assert reply.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize("override, named", [
    ({"SESSION_COOKIE_SECURE": False}, "SESSION_COOKIE_SECURE"),
    ({"REMEMBER_COOKIE_SECURE": False}, "REMEMBER_COOKIE_SECURE"),
    ({"WTF_CSRF_ENABLED": False}, "WTF_CSRF_ENABLED"),
    ({"ALLOW_LOCALHOST_WEBHOOKS": True}, "ALLOW_LOCALHOST_WEBHOOKS"),
    ({"WEBHOOK_ALLOWED_IPS": "stripe=3.18.12.0/33"}, "WEBHOOK_ALLOWED_IPS"),
])
def test_production_refuses_unsafe_settings(app, override, named):
    with pytest.raises(ConfigError, match=named):
        make_app(**_production(**override))


def test_production_defaults_from_the_environment_are_secure(monkeypatch):
    from app.config import load_config

    monkeypatch.delenv("WTF_CSRF_ENABLED", raising=False)
    cfg = load_config("production")
    assert cfg["SESSION_COOKIE_SECURE"] and cfg["REMEMBER_COOKIE_SECURE"]
    assert cfg["ALLOW_LOCALHOST_WEBHOOKS"] is False and cfg["WTF_CSRF_ENABLED"]
    check_security_config(cfg)  # the cookie/CSRF defaults pass


def test_secrets_and_card_numbers_are_redacted_from_logs():
    line = redact("key sk_live_51Habcdefghijkl whsec_abcdefghijkl rzp_live_ABCDEFGHIJ "
                  "card 4242 4242 4242 4242 and 4000000000003220 order TF-0A1B2C3D4E5F")
    assert "sk_live_51H" not in line and "abcdefghijkl" not in line
    assert "4242 4242" not in line and "4000000000003220" not in line
    assert "ABCDEFGHIJ" not in line and "TF-0A1B2C3D4E5F" in line


def test_webhooks_are_never_rate_limited_even_under_a_default_limit(app):
    shop = make_app(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2 per minute")
    client = shop.test_client()
    try:
        pages = [client.get("/").status_code for _ in range(3)]
        deliveries = [post_webhook(client, event_body("pipeline.any")).status_code
                      for _ in range(5)]
    finally:
        # The limiter is one object shared by every app; its default limits outlive this one.
        limiter.limit_manager.set_default_limits([])

    assert pages == [200, 200, 429]  # the default limit is in force for shoppers
    assert deliveries == [200] * 5 and count(WebhookEvent) == 5
