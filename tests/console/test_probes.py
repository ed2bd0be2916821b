"""/healthz, /readyz and /metrics: JSON or Prometheus text, no cookie, never throttled."""
import pytest

from tests.conftest import database_url, make_app, serve_app


def test_healthz_answers_ok_without_a_session_cookie(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ok"}
    assert "Set-Cookie" not in r.headers
    assert r.headers["X-Request-ID"].startswith("REF-")


def test_readyz_reports_database_migrated_and_optional_services(client):
    r = client.get("/readyz")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "up"
    assert body["checks"]["redis"]["status"] == "not_configured"
    assert body["checks"]["smtp"]["status"] in ("up", "down")
    assert "Set-Cookie" not in r.headers


@pytest.fixture
def redis_down_app(_schema):
    yield from serve_app(make_app(REDIS_URL="redis://127.0.0.1:1/0",
                                  RATELIMIT_STORAGE_URI="memory://"))


def test_readyz_passes_with_redis_down(redis_down_app):
    r = redis_down_app.test_client().get("/readyz")
    assert r.status_code == 200
    assert r.get_json()["checks"]["redis"]["status"] == "down"


def test_readyz_fails_with_the_database_down(_schema, tmp_path):
    # PostgreSQL: nothing listens on port 1. SQLite: the "file" is a directory.
    down = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere" if database_url().startswith(
        "postgresql") else f"sqlite:///{tmp_path}"
    app = make_app(SQLALCHEMY_DATABASE_URI=down)
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["status"] == "down"
    assert app.test_client().get("/healthz").status_code == 200  # alive, just not ready


def test_readyz_fails_when_the_schema_is_behind(app, client):
    from app.extensions import db
    import sqlalchemy as sa

    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.get_json()["checks"]["database"]["status"] == "not_migrated"
    finally:
        from app.services.health import migration_heads

        with db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"),
                         {"v": migration_heads()[0]})


def test_probes_are_never_rate_limited(app, client):
    app.config["RATELIMIT_ENABLED"] = True
    for _ in range(50):
        assert client.get("/healthz").status_code == 200


def test_metrics_refused_without_token_or_allowed_address(app, client):
    r = client.get("/metrics")
    assert r.status_code == 403
    assert r.get_json()["error"] == "METRICS_FORBIDDEN"
    app.config["METRICS_TOKEN"] = "s3cret-metrics-token"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_metrics_with_the_bearer_token(app, client):
    app.config["METRICS_TOKEN"] = "s3cret-metrics-token"
    r = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert r.status_code == 200
    assert r.mimetype == "text/plain"
    for name in ("tiffin_webhook_deliveries_total", "tiffin_webhook_processing_seconds",
                 "tiffin_webhook_inbox_backlog", "tiffin_outbox_backlog",
                 "tiffin_webhook_dead_letters", "tiffin_orders", "tiffin_monitor_findings",
                 "tiffin_checkout_starts_total", "tiffin_checkout_declines_total"):
        assert f"# TYPE {name}" in r.text or f"# HELP {name}" in r.text, name
    assert "Set-Cookie" not in r.headers


def test_metrics_from_an_allowed_address(app, client):
    app.config["METRICS_ALLOWED_IPS"] = "10.0.0.0/8, 127.0.0.1"
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.2.3.4"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 403


def test_metrics_count_webhooks_checkouts_and_declines(app, client, auth):
    from tests import flows

    app.config["METRICS_ALLOWED_IPS"] = "127.0.0.1"

    def value(text, line_start):
        lines = [l for l in text.splitlines() if l.startswith(line_start)]
        return sum(float(l.rsplit(" ", 1)[1]) for l in lines)

    before = client.get("/metrics").text
    auth.register()
    flows.pay(client)
    flows.pay(client, "meal-pack-5", outcome="decline", reason="insufficient_funds")
    after = client.get("/metrics").text
    assert value(after, 'tiffin_checkout_starts_total{gateway="test"}') == \
        value(before, 'tiffin_checkout_starts_total{gateway="test"}') + 2
    assert value(after, 'tiffin_checkout_declines_total{gateway="test"}') >= \
        value(before, 'tiffin_checkout_declines_total{gateway="test"}') + 1
    assert 'tiffin_orders{status="paid"} 1.0' in after
