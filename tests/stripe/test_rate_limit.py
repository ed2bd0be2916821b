"""At most CHECKOUT_RATE_LIMIT (5 a minute) checkout starts per user; Redis optional."""
import pytest
import redis

from app.config import load_config
from tests.conftest import form_token
from tests.stripe.conftest import free_port

REDIS_DB_URL = "redis://127.0.0.1:6379/13"  # a database number no other suite uses
KEY_PREFIX = "tiffin-stripe-tests"


def _redis_available() -> bool:
    try:
        return redis.Redis.from_url(REDIS_DB_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False


def _start(client):
    token = form_token(client.get("/plans/meal-pack-5").text, "checkout_token")
    return client.post("/checkout/meal-pack-5", data={"gateway": "stripe", "checkout_token": token})


def _six_starts(client, auth):
    auth.register()
    return [_start(client).status_code for _ in range(6)]


def test_limit_in_memory(client, auth, fake_stripe):
    codes = _six_starts(client, auth)
    assert codes == [303] * 5 + [429]


def test_429_page_names_the_code(client, auth, fake_stripe):
    _six_starts(client, auth)
    page = _start(client)
    assert page.status_code == 429 and "RATE_LIMITED" in page.text


def test_limit_is_per_user(client, auth, fake_stripe):
    assert _six_starts(client, auth)[-1] == 429
    auth.logout()
    auth.register(email="ravi@example.com", name="Ravi")
    assert _start(client).status_code == 303


def test_redis_url_selects_redis_storage(monkeypatch):
    monkeypatch.setenv("REDIS_URL", REDIS_DB_URL)
    assert load_config("testing")["RATELIMIT_STORAGE_URI"] == REDIS_DB_URL


class TestWithRedis:
    @pytest.fixture
    def stripe_overrides(self):
        if not _redis_available():
            pytest.skip("Redis is not running on 127.0.0.1:6379")
        r = redis.Redis.from_url(REDIS_DB_URL)
        for key in r.scan_iter(f"*{KEY_PREFIX}*"):
            r.delete(key)
        return {"REDIS_URL": REDIS_DB_URL, "RATELIMIT_STORAGE_URI": REDIS_DB_URL,
                "RATELIMIT_KEY_PREFIX": KEY_PREFIX}

    def test_counts_are_kept_in_redis(self, client, auth, fake_stripe):
        codes = _six_starts(client, auth)
        assert codes == [303] * 5 + [429]
        keys = list(redis.Redis.from_url(REDIS_DB_URL).scan_iter(f"*{KEY_PREFIX}*"))
        assert keys, "no rate-limit counter was written to Redis"


class TestWithRedisDown:
    @pytest.fixture
    def stripe_overrides(self):
        down = f"redis://127.0.0.1:{free_port()}/0"  # a port nothing listens on
        return {"REDIS_URL": down, "RATELIMIT_STORAGE_URI": down}

    def test_checkout_still_works_and_is_still_limited(self, client, auth, fake_stripe):
        codes = _six_starts(client, auth)
        assert codes[:5] == [303] * 5
        assert codes[5] == 429  # the in-memory fallback keeps counting
