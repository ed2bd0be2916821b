"""Who may enter /ops/: proven over the whole URL map, and CSRF on every POST."""
import re

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLogEntry, User
from tests.conftest import form_token, make_app, serve_app
from tests.console.conftest import make_account, sign_in

SAMPLE_ARGS = {"user_id": 1, "event_id": 1, "email_id": 1, "reference": "TF-000000000000",
               "kind": "status-drift", "target": "1"}


def ops_requests(app):
    """Every (method, url) the app routes under /ops/, with sample arguments."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/ops"):
            continue
        url = rule.rule
        for name in rule.arguments:
            url = re.sub(rf"<(?:[a-z]+:)?{name}>", str(SAMPLE_ARGS[name]), url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, url))
    return found


def test_the_url_map_has_the_console_pages(app):
    urls = {url for _, url in ops_requests(app)}
    assert {"/ops/", "/ops/webhooks", "/ops/outbox", "/ops/search", "/ops/charts"} <= urls
    assert len(ops_requests(app)) >= 15


def test_no_ops_endpoint_is_reachable_anonymously(app, client):
    for method, url in ops_requests(app):
        r = client.open(url, method=method)
        assert r.status_code == 302, (method, url, r.status_code)
        assert r.location.startswith("/login"), (method, url, r.location)


def test_no_ops_endpoint_is_reachable_by_a_shopper(app, shopper_client):
    for method, url in ops_requests(app):
        r = shopper_client.open(url, method=method)
        assert r.status_code == 403, (method, url, r.status_code)
        assert 'data-testid="error-code">OPS_FORBIDDEN<' in r.text, (method, url)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLogEntry).where(
        AuditLogEntry.action.startswith("ops_"))) == 0


def test_an_operator_reaches_the_dashboard(ops_client):
    r = ops_client.get("/ops/")
    assert r.status_code == 200
    assert "Operator dashboard" in r.text


def test_a_revoked_operator_is_refused_at_once(app, ops_client, runner, operator):
    assert runner.invoke(args=["users", "revoke-operator", operator.email]).exit_code == 0
    r = ops_client.get("/ops/")
    assert r.status_code == 403 and "OPS_FORBIDDEN" in r.text


@pytest.fixture
def csrf_app(_schema):
    yield from serve_app(make_app(WTF_CSRF_ENABLED=True))


def _csrf_token(html: str) -> str:
    return form_token(html, "csrf_token")


def _operator_with_csrf(app):
    make_account("olga.operator@example.com", role="operator")
    client = app.test_client()
    page = client.get("/login")
    client.post("/login", data={"email": "olga.operator@example.com",
                                "password": "correct horse 1", "csrf_token": _csrf_token(page.text)})
    return client


def test_every_ops_post_without_its_csrf_token_is_refused(csrf_app):
    client = _operator_with_csrf(csrf_app)
    assert client.get("/ops/").status_code == 200
    posts = [url for method, url in ops_requests(csrf_app) if method == "POST"]
    assert posts
    for url in posts:
        r = client.post(url, data={"confirm_reference": "TF-000000000000"})
        assert r.status_code == 400, (url, r.status_code)
        assert "FORM_EXPIRED" in r.text, url
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLogEntry).where(
        AuditLogEntry.action.startswith("ops_"))) == 0


def test_an_ops_post_with_its_csrf_token_is_accepted(csrf_app):
    client = _operator_with_csrf(csrf_app)
    dashboard = client.get("/ops/")
    r = client.post("/ops/monitor/run", data={"csrf_token": _csrf_token(dashboard.text)})
    assert r.status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLogEntry).where(
        AuditLogEntry.action == "ops_monitor_run_started")) == 1


def test_grant_and_revoke_operator_are_audited(app, runner):
    person = make_account("rita@example.com")
    r = runner.invoke(args=["users", "grant-operator", "Rita@Example.com"])
    assert r.exit_code == 0, r.output
    assert db.session.get(User, person.id, populate_existing=True).role == "operator"
    r = runner.invoke(args=["users", "revoke-operator", "rita@example.com"])
    assert r.exit_code == 0
    assert db.session.get(User, person.id, populate_existing=True).role == "shopper"
    entries = db.session.scalars(sa.select(AuditLogEntry).where(
        AuditLogEntry.action == "role_changed").order_by(AuditLogEntry.id)).all()
    assert [(e.details["before"], e.details["after"]) for e in entries] == [
        ({"role": "shopper"}, {"role": "operator"}), ({"role": "operator"}, {"role": "shopper"})]
    assert all(e.actor == "cli:users" and e.user_id == person.id for e in entries)


def test_grant_operator_for_an_unknown_email_exits_1(app, runner):
    r = runner.invoke(args=["users", "grant-operator", "nobody@example.com"])
    assert r.exit_code == 1
    assert "no account" in r.output


def test_seed_demo_creates_an_operator_in_development_only(app, runner):
    app.config["TIFFIN_ENV"] = "development"
    r = runner.invoke(args=["seed", "--demo"])
    assert r.exit_code == 0, r.output
    assert "operator@tiffin.example" in r.output and "password" in r.output
    demo = db.session.scalars(sa.select(User).where(User.email == "operator@tiffin.example")).one()
    assert demo.is_operator
    client = app.test_client()
    password = re.search(r"password (\S+)", r.output).group(1)
    assert client.post("/login", data={"email": demo.email, "password": password}).status_code == 302
    assert client.get("/ops/").status_code == 200
    app.config["TIFFIN_ENV"] = "production"
    r = runner.invoke(args=["seed", "--demo"])
    assert r.exit_code != 0
    app.config["TIFFIN_ENV"] = "testing"
