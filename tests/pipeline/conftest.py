"""Real failing parts for the pipeline tests: a redis-server the test can kill,
an SMTP sink (aiosmtpd), a TCP proxy in front of PostgreSQL the test can close,
and helpers to post signed test-gateway webhooks."""
from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
from email import message_from_bytes

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.extensions import db
from app.gateways import get_gateway
from app.models import Order
from tests.conftest import database_url
from tests.flows import gateway_page


@pytest.fixture(autouse=True)
def _tiffin_loggers_enabled(_schema):
    """Alembic's fileConfig (migrations/env.py, run by the schema fixture) disables
    loggers that already exist; these tests assert on what the app logs."""
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("tiffin") and isinstance(logger, logging.Logger):
            logger.disabled = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, attempts: int = 500) -> None:
    """Block until something accepts on 127.0.0.1:port (readiness, not a timing)."""
    for _ in range(attempts):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            threading.Event().wait(0.02)
    raise RuntimeError(f"nothing listening on port {port}")


class RedisServer:
    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    server.kill()


class SmtpSink:
    """An aiosmtpd server that keeps every message it accepts."""

    def __init__(self, port: int):
        from aiosmtpd.controller import Controller

        self.messages = []
        self.refuse: set[str] = set()  # recipients answered "550 no such user"
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if address in sink.refuse:
                    return "550 no such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)

    def start(self):
        self.controller.start()

    def stop(self):
        self.controller.stop()


@pytest.fixture
def smtp_port():
    """A port with nothing listening on it (yet)."""
    return free_port()


class TcpProxy:
    """A byte-for-byte TCP proxy; `close()` drops the listener and every open
    connection (the database has gone away), `open()` brings it back."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(); close() alone would not
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def url(self) -> str:
        return make_url(database_url()).set(host="127.0.0.1", port=self.port) \
            .render_as_string(hide_password=False)


@pytest.fixture
def pg_proxy(pg_only):
    url = make_url(database_url())
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.open()
    yield proxy
    proxy.close()


# --- webhook helpers ----------------------------------------------------------

def session_for(order: Order) -> dict:
    return {"order_id": order.gateway_order_id, "reference": order.reference,
            "amount_minor": order.amount_minor, "currency": order.currency,
            "user_id": order.user_id, "plan_id": order.meal_plan_id}


def paid_event(order: Order, payment_id: str = "tgp_pipeline") -> bytes:
    return get_gateway("test").build_event(session_for(order), "payment.succeeded",
                                           payment_id=payment_id)


def event_body(event_type: str, **data) -> bytes:
    """A signed-able test-gateway event of any type (for temporary handlers)."""
    import json
    import secrets
    import time

    return json.dumps({"id": "tge_" + secrets.token_hex(8), "type": event_type,
                       "created": int(time.time()), "data": data}).encode()


def post_webhook(client, body: bytes, **kwargs):
    headers = {"Content-Type": "application/json",
               "X-Test-Gateway-Signature": get_gateway("test").sign_body(body)}
    return client.post("/webhooks/test", data=body, headers=headers, **kwargs)


def pending_order(client) -> Order:
    """Pay on the test gateway but lose both the redirect and the webhook: a
    pending order whose payment only a later webhook will confirm."""
    page = gateway_page(client)
    r = client.post(page, data={"outcome": "pay_no_webhook"})
    assert r.status_code == 303
    return db.session.scalars(sa.select(Order).order_by(Order.id.desc())).first()
