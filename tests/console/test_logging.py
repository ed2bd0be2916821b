"""Logs are JSON lines with the request id (the support reference), order and event ids."""
import io
import json
import logging
import re

import pytest

from app.logs import bind, clear, json_formatter


@pytest.fixture
def json_lines():
    """Capture what the JSON handler writes (the format gunicorn's stderr gets)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    root.removeHandler(handler)
    root.setLevel(previous)
    clear()


def test_every_line_of_a_request_carries_its_request_id_which_is_the_support_reference(
        client, json_lines):
    r = client.get("/no-such-page")
    assert r.status_code == 404
    ref = re.search(r'data-testid="support-ref">([^<]+)<', r.text).group(1)
    assert r.headers["X-Request-ID"] == ref
    lines = [line for line in json_lines() if line.get("request_id") == ref]
    assert lines, json_lines()
    assert any(line["logger"] == "tiffin.request" and line["status"] == 404 for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in json_lines())


def test_lines_name_the_order_and_the_gateway_event_once_known(app, client, auth, json_lines):
    from tests import flows

    auth.register()
    flows.pay(client)
    lines = json_lines()
    with_order = [line for line in lines if line.get("order_reference")]
    assert with_order, lines
    assert all(re.fullmatch(r"TF-[0-9A-F]{12}", line["order_reference"]) for line in with_order)


def test_a_webhook_line_names_its_gateway_event(app, json_lines):
    from app.services import webhook_inbox
    from tests.ops.conftest import webhook_event

    event = webhook_event(status="received")
    event.payload = {"not": "a test gateway payload"}
    webhook_inbox.process_event(event, trigger="replay")
    logging.getLogger("tiffin.test").info("after processing")
    assert json_lines()[-1]["gateway_event_id"] == event.event_id


def test_secrets_and_card_fields_are_redacted(json_lines):
    log = logging.getLogger("tiffin.test")
    bind(order_reference="TF-0123456789AB")
    log.warning("key sk_live_abcdefghijklmnop and card 4242 4242 4242 4242 seen",
                extra={"card_number": "4111111111111111", "password": "hunter22", "amount": 5})
    line = json_lines()[-1]
    text = json.dumps(line)
    assert "abcdefghijklmnop" not in text and "4242 4242" not in text
    assert "4111111111111111" not in text and "hunter22" not in text
    assert line["amount"] == 5 and line["order_reference"] == "TF-0123456789AB"
