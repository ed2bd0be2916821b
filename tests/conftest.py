"""Shared fixtures: app, client, runner, auth, and a clean database per test.

The schema is built once per run with `flask db upgrade` (so the migrations are
what the tests exercise) on SQLite by default, or on the PostgreSQL database in
DATABASE_URL. Tables are emptied between tests.
"""
from __future__ import annotations

import os
import re
import tempfile

import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import MealPlan, User
from app.services.catalogue import seed_catalogue

_SQLITE_DIR = tempfile.mkdtemp(prefix="tiffin-test-")


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{_SQLITE_DIR}/test.db"


def is_postgres() -> bool:
    return database_url().startswith("postgresql")


def make_app(**overrides):
    config = {
        "TIFFIN_ENV": "testing",
        "SQLALCHEMY_DATABASE_URI": database_url(),
        "WTF_CSRF_ENABLED": False,
        "SECRET_KEY": "test-secret-key",
        "TEST_GATEWAY_ENABLED": True,
        "TEST_GATEWAY_WEBHOOK_SECRET": "whsec_test_gateway",
        "RATELIMIT_STORAGE_URI": "memory://",
        "APP_BASE_URL": "http://shop.test",
        "SERVER_NAME": None,
        # Tests that need the prompt send after commit turn it on (tests/pipeline/test_prompt_mail.py);
        # elsewhere a background sender would race the assertions on outbox rows.
        "MAIL_SEND_PROMPTLY": False,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture(scope="session")
def _schema():
    """Build the schema once with the real migrations."""
    from flask_migrate import upgrade

    app = make_app()
    with app.app_context():
        if is_postgres():
            with db.engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
        upgrade()
        db.engine.dispose()
    return True


def _empty_tables():
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if is_postgres():
            conn.execute(sa.text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(sa.text(f"DELETE FROM {name}"))


def reset_shop(prepare=None) -> None:
    """Empty every table and seed the catalogue (inside an app context)."""
    _empty_tables()
    seed_catalogue()
    if prepare is not None:
        prepare()


def serve_app(app, prepare=None):
    """Yield `app` inside its context on an emptied, seeded database (for app fixtures)."""
    with app.app_context():
        reset_shop(prepare)
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(_schema):
    yield from serve_app(make_app())


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def pg_only():
    """Concurrency proofs run on PostgreSQL; with REQUIRE_POSTGRES=1 (CI) a
    missing PostgreSQL fails the run instead of skipping."""
    if not is_postgres():
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but DATABASE_URL is not PostgreSQL")
        pytest.skip("needs PostgreSQL (set DATABASE_URL=postgresql+psycopg://…)")


class AuthActions:
    def __init__(self, client):
        self._client = client

    def register(self, email="asha@example.com", name="Asha", password="correct horse 1"):
        return self._client.post("/register", data={"name": name, "email": email,
                                                    "password": password, "confirm": password})

    def login(self, email="asha@example.com", password="correct horse 1"):
        return self._client.post("/login", data={"email": email, "password": password})

    def logout(self):
        return self._client.post("/logout")


@pytest.fixture
def auth(client):
    return AuthActions(client)


def plan(slug: str) -> MealPlan:
    return db.session.scalars(sa.select(MealPlan).where(MealPlan.slug == slug)).one()


def user(email: str = "asha@example.com") -> User:
    return db.session.scalars(sa.select(User).where(User.email == email)).one()


def count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def form_token(html: str, name: str) -> str | None:
    match = re.search(rf'name="{name}"[^>]*value="([^"]+)"', html) or \
        re.search(rf'value="([^"]+)"[^>]*name="{name}"', html)
    return match.group(1) if match else None
