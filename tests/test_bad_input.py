"""Bad input gets its code, and nothing else: body caps (413), webhook bodies that
are JSON but not an object (400), over-long form fields, and the 500 page."""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import time

import pytest

from app.models import Order, User, WebhookDeliveryAttempt, WebhookEvent
from tests.conftest import count, form_token, make_app, serve_app
from tests.fakes.stripe import signed_headers as stripe_signed_headers

MIB = 1024 * 1024
STRIPE_SECRET = "whsec_bad_input"
RAZORPAY_SECRET = "whsec_rzp_bad_input"
TEST_SECRET = "whsec_test_gateway"
ALL_GATEWAYS = {
    "STRIPE_SECRET_KEY": "sk_test_bad_input", "STRIPE_PUBLISHABLE_KEY": "pk_test_bad_input",
    "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9",
    "RAZORPAY_KEY_ID": "rzp_test_BadInput0001", "RAZORPAY_KEY_SECRET": "rzp_secret_bad_input",
    "RAZORPAY_WEBHOOK_SECRET": RAZORPAY_SECRET, "RAZORPAY_API_BASE": "http://127.0.0.1:9",
}


@pytest.fixture
def app(_schema):
    yield from serve_app(make_app(**ALL_GATEWAYS))


def page_code(response) -> str | None:
    marker = 'data-testid="error-code">'
    start = response.text.find(marker)
    return response.text[start + len(marker):].split("<", 1)[0] if start >= 0 else None


def signed(gateway: str, body: bytes) -> dict:
    """Headers that sign `body` correctly for `gateway`, as the gateway itself would."""
    if gateway == "stripe":
        return stripe_signed_headers(body, STRIPE_SECRET)
    if gateway == "razorpay":
        return {"Content-Type": "application/json", "X-Razorpay-Event-Id": "evt_bad_input",
                "X-Razorpay-Signature": hmac.new(RAZORPAY_SECRET.encode(), body,
                                                 hashlib.sha256).hexdigest()}
    return {"Content-Type": "application/json",
            "X-Test-Gateway-Signature": hmac.new(TEST_SECRET.encode(), body,
                                                 hashlib.sha256).hexdigest()}


# --- 5. a request-size cap that applies to every route --------------------------------

# A body with no Content-Length, read until the server says it ended (as a WSGI server
# that decodes chunked transfer does).
NO_CONTENT_LENGTH = {"CONTENT_LENGTH": None, "wsgi.input_terminated": True}


def _form_body(size: int) -> bytes:
    return b"email=asha%40example.com&password=" + b"x" * size


@pytest.mark.parametrize("path", ["/login", "/register", "/payments/razorpay/verify",
                                  "/checkout/lunch-monthly", "/account/delete", "/no-such-page"])
@pytest.mark.parametrize("variant", ["content-length", "streamed", "chunked"])
def test_an_oversized_body_is_413_request_too_large_on_every_page(client, path, variant):
    body = _form_body(2 * MIB)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if variant == "content-length":
        reply = client.post(path, data=body, headers=headers)
    else:
        if variant == "chunked":
            headers["Transfer-Encoding"] = "chunked"
        reply = client.post(path, input_stream=io.BytesIO(body), headers=headers,
                            environ_overrides=NO_CONTENT_LENGTH)

    assert reply.status_code == 413
    assert page_code(reply) == "REQUEST_TOO_LARGE"
    assert 'data-testid="support-ref"' in reply.text


def test_a_body_under_the_cap_is_read_as_usual(client, auth):
    auth.register()
    auth.logout()
    reply = client.post("/login", data={"email": "asha@example.com",
                                        "password": "correct horse 1", "padding": "x" * 100_000})
    assert reply.status_code == 302


def test_the_cap_is_the_max_content_length_setting(_schema):
    small = make_app(MAX_CONTENT_LENGTH=4096).test_client()
    assert small.post("/login", data=_form_body(5000)).status_code == 413
    assert small.post("/login", data=_form_body(1000)).status_code == 400  # read, refused


def test_max_content_length_comes_from_the_environment(monkeypatch):
    from app.config import load_config

    assert load_config("testing")["MAX_CONTENT_LENGTH"] == MIB
    monkeypatch.setenv("MAX_CONTENT_LENGTH", "2048")
    assert load_config("testing")["MAX_CONTENT_LENGTH"] == 2048


@pytest.mark.parametrize("gateway", ["stripe", "razorpay", "test"])
@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_signed_webhook_is_413_not_a_signature_error(client, gateway, chunked):
    body = json.dumps({"id": "evt_big", "type": "x", "padding": "x" * 300_000}).encode()
    headers = signed(gateway, body)
    if chunked:
        reply = client.post(f"/webhooks/{gateway}", input_stream=io.BytesIO(body),
                            headers={**headers, "Transfer-Encoding": "chunked"},
                            environ_overrides=NO_CONTENT_LENGTH)
    else:
        reply = client.post(f"/webhooks/{gateway}", data=body, headers=headers)

    assert reply.status_code == 413 and reply.json["error"] == "REQUEST_TOO_LARGE"
    assert count(WebhookEvent) == 0


def test_webhooks_keep_their_own_cap_above_the_page_cap(_schema):
    shop = make_app(**ALL_GATEWAYS, MAX_CONTENT_LENGTH=4096, WEBHOOK_MAX_BODY_BYTES=64 * 1024)
    body = json.dumps({"id": "evt_padded", "type": "pipeline.any", "created": int(time.time()),
                       "data": {"padding": "x" * 20_000}}).encode()
    with shop.app_context():
        reply = shop.test_client().post("/webhooks/test", data=body, headers=signed("test", body))
        assert reply.status_code == 200, reply.text
        assert count(WebhookEvent) == 1


# --- 6. a validly signed webhook whose JSON is not an object ---------------------------

@pytest.mark.parametrize("gateway", ["stripe", "razorpay", "test"])
@pytest.mark.parametrize("body", [b"[]", b'[{"id": "evt_1", "type": "x"}]', b'"evt_1"', b"42",
                                  b"3.5", b"true", b"null"])
def test_a_signed_webhook_that_is_json_but_not_an_object_is_400(client, gateway, body):
    reply = client.post(f"/webhooks/{gateway}", data=body, headers=signed(gateway, body))

    assert reply.status_code == 400, reply.text
    assert reply.json["error"] == "WEBHOOK_PAYLOAD_INVALID"
    assert count(WebhookEvent) == 0 and count(WebhookDeliveryAttempt) == 0


@pytest.mark.parametrize("gateway", ["stripe", "razorpay", "test"])
def test_a_signed_webhook_that_is_not_json_is_400(client, gateway):
    body = b"not json {"
    reply = client.post(f"/webhooks/{gateway}", data=body, headers=signed(gateway, body))
    assert reply.status_code == 400 and reply.json["error"] == "WEBHOOK_PAYLOAD_INVALID"
    assert count(WebhookEvent) == 0


def test_a_body_of_exactly_the_cap_is_accepted_and_one_byte_more_is_413(_schema):
    shop = make_app(MAX_CONTENT_LENGTH=4096).test_client()
    exact = _form_body(4096 - len(_form_body(0)))
    for variant in ({}, NO_CONTENT_LENGTH):
        assert shop.post("/login", input_stream=io.BytesIO(exact), environ_overrides=variant,
                         content_type="application/x-www-form-urlencoded").status_code == 400
        assert shop.post("/login", input_stream=io.BytesIO(exact + b"x"), environ_overrides=variant,
                         content_type="application/x-www-form-urlencoded").status_code == 413


# --- 5, against a real server: real chunked transfer -----------------------------------

@pytest.fixture(scope="module")
def served(_schema):
    """The shop under gunicorn with its default caps (MAX_CONTENT_LENGTH 1 MiB, webhooks
    256 KiB), on the tests' database."""
    from bench.server import Gunicorn, app_env
    from tests.conftest import database_url

    env = app_env(database_url(), secret_key="served-secret-key", webhook_secret=TEST_SECRET,
                  WTF_CSRF_ENABLED="0")
    with Gunicorn(env, workers=1, ready_path="/static/css/tiffin.css") as server:
        yield server


def _send(server, path: str, body: bytes, *, chunked: bool, headers: dict | None = None):
    """POST with requests, as a client would: with Content-Length, or chunked (a generator
    body has no length, so requests sends `Transfer-Encoding: chunked`)."""
    import requests

    headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    data = (body[i:i + 64 * 1024] for i in range(0, len(body), 64 * 1024)) if chunked else body
    return requests.post(server.url + path, data=data, headers=headers, timeout=60)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/login", "/payments/razorpay/verify"])
def test_a_served_app_answers_a_16_mib_form_with_413(served, path, chunked):
    reply = _send(served, path, _form_body(16 * MIB), chunked=chunked)
    assert reply.status_code == 413
    assert 'data-testid="error-code">REQUEST_TOO_LARGE<' in reply.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_served_app_answers_an_oversized_webhook_with_413_json(app, served, chunked):
    body = json.dumps({"id": "evt_big", "type": "x", "pad": "x" * MIB}).encode()
    reply = _send(served, "/webhooks/test", body, chunked=chunked, headers=signed("test", body))
    assert reply.status_code == 413 and reply.json()["error"] == "REQUEST_TOO_LARGE"
    assert count(WebhookEvent) == 0


def test_a_served_app_still_reads_a_chunked_form_under_the_cap(app, served):
    reply = _send(served, "/login", b"email=nobody%40example.com&password=wrong-guess-1",
                  chunked=True)
    assert reply.status_code == 400 and "Email or password is incorrect" in reply.text


# --- 7. every form field is bounded by its column; the 500 page always renders ----------

LONG_EMAIL = "a" * 250 + "@example.com"  # 262 characters: users.email is 254


def test_register_refuses_an_over_long_name_and_email_with_the_form_message(client):
    reply = client.post("/register", data={"name": "N" * 121, "email": LONG_EMAIL,
                                            "password": "correct horse 1",
                                            "confirm": "correct horse 1"})
    assert reply.status_code == 400
    assert "This can be at most 120 characters long." in reply.text
    assert "This can be at most 254 characters long." in reply.text
    assert count(User) == 0


def test_login_refuses_an_over_long_email_with_the_form_message(client):
    reply = client.post("/login", data={"email": LONG_EMAIL, "password": "x" * 200})
    assert reply.status_code == 400
    assert "This can be at most 254 characters long." in reply.text


def test_an_over_long_checkout_token_is_refused_by_the_form(client, auth):
    auth.register()
    page = client.get("/plans/lunch-monthly")
    assert form_token(page.text, "checkout_token")
    reply = client.post("/checkout/lunch-monthly", data={"gateway": "test",
                                                         "checkout_token": "t" * 65})
    assert reply.status_code == 400 and page_code(reply) == "FORM_INVALID"
    assert "Checkout token: This can be at most 64 characters long." in reply.text
    assert count(Order) == 0
    ok = client.post("/checkout/lunch-monthly", data={"gateway": "test", "checkout_token": "t" * 64})
    assert ok.status_code == 303 and count(Order) == 1


def test_an_over_long_gateway_name_is_an_unknown_gateway(client, auth):
    auth.register()
    reply = client.post("/checkout/lunch-monthly", data={"gateway": "g" * 300})
    assert reply.status_code == 404 and page_code(reply) == "GATEWAY_NOT_CONFIGURED"
    assert count(Order) == 0


def test_delete_account_refuses_an_over_long_password_with_the_form_message(client, auth):
    auth.register()
    reply = client.post("/account/delete", data={"password": "p" * 129, "confirm": "y"})
    assert reply.status_code == 400 and "at most 128 characters" in reply.text
    assert count(User, User.deleted_at.is_(None)) == 1


@pytest.fixture
def failing_app(_schema):
    """The shop with one extra page whose write fails in the database, after the signed-in
    user was loaded, as a checkout's insert of an over-long value did on PostgreSQL."""
    from flask_login import current_user, login_required

    from app.extensions import db

    shop = make_app(PROPAGATE_EXCEPTIONS=False)  # answer like production, not raise into the test

    @login_required
    def broken_page():
        db.session.add(User(email=None, name=current_user.name, password_hash="-"))
        db.session.flush()  # NOT NULL: the flush fails and the session refuses every query
        return "unreachable"

    shop.add_url_rule("/broken-page", view_func=broken_page)
    yield from serve_app(shop)


def test_a_database_error_inside_a_request_renders_internal_error_with_its_reference(failing_app):
    client = failing_app.test_client()
    client.post("/register", data={"name": "Asha", "email": "asha@example.com",
                                   "password": "correct horse 1", "confirm": "correct horse 1"})

    reply = client.get("/broken-page")

    assert reply.status_code == 500 and page_code(reply) == "INTERNAL_ERROR"
    assert re.search(r'data-testid="support-ref">REF-[0-9A-F]{10}<', reply.text)
    assert "Sign out" in reply.text  # the page's own query (the signed-in user) ran
