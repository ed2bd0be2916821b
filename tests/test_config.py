"""Production refuses unsafe settings and names the one that is wrong."""
import pytest

from app import create_app
from app.config import ConfigError

GOOD = {
    "TIFFIN_ENV": "production",
    "SECRET_KEY": "s" * 40,
    "SQLALCHEMY_DATABASE_URI": "sqlite://",
    "TEST_GATEWAY_ENABLED": False,
    "TEST_GATEWAY_WEBHOOK_SECRET": "",
    "ALLOW_LOCALHOST_WEBHOOKS": False,
    "APP_BASE_URL": "https://shop.example",
    "STRIPE_SECRET_KEY": "sk_live_x",
    "STRIPE_PUBLISHABLE_KEY": "pk_live_x",
    "STRIPE_WEBHOOK_SECRET": "whsec_x",
}


def test_safe_production_config_starts():
    app = create_app(dict(GOOD))
    assert app.config["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize("override,setting", [
    ({"SECRET_KEY": ""}, "SECRET_KEY"),
    ({"SECRET_KEY": "dev-only-insecure-secret-key"}, "SECRET_KEY"),
    ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ({"TEST_GATEWAY_ENABLED": True, "TEST_GATEWAY_WEBHOOK_SECRET": "x" * 20}, "TEST_GATEWAY_ENABLED"),
    ({"STRIPE_WEBHOOK_SECRET": ""}, "STRIPE_WEBHOOK_SECRET"),
    ({"STRIPE_PUBLISHABLE_KEY": ""}, "STRIPE_PUBLISHABLE_KEY"),
    ({"RAZORPAY_KEY_ID": "rzp_live_x", "RAZORPAY_KEY_SECRET": "s"}, "RAZORPAY_WEBHOOK_SECRET"),
    ({"RAZORPAY_KEY_ID": "rzp_live_x", "RAZORPAY_WEBHOOK_SECRET": "w"}, "RAZORPAY_KEY_SECRET"),
    ({"ALLOW_LOCALHOST_WEBHOOKS": True}, "ALLOW_LOCALHOST_WEBHOOKS"),
    ({"APP_BASE_URL": "http://shop.example"}, "APP_BASE_URL"),
    ({"STRIPE_SECRET_KEY": ""}, "no payment gateway"),
])
def test_unsafe_production_config_refuses_and_names_setting(override, setting):
    with pytest.raises(ConfigError) as exc:
        create_app({**GOOD, **override})
    assert setting in str(exc.value)


def test_production_from_environment_refuses_default_secret(monkeypatch):
    monkeypatch.setenv("TIFFIN_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app()


def test_development_enables_test_gateway_only_without_real_keys(monkeypatch):
    for name in ("STRIPE_SECRET_KEY", "RAZORPAY_KEY_ID", "TEST_GATEWAY_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", "sqlite://")
    assert create_app("development").config["TEST_GATEWAY_ENABLED"] is True
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_x")
    monkeypatch.setenv("STRIPE_PUBLISHABLE_KEY", "pk_test_x")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_x")
    assert create_app("development").config["TEST_GATEWAY_ENABLED"] is False


def test_test_gateway_pages_absent_when_disabled():
    app = create_app({**GOOD})
    assert "test_gateway.pay" not in app.view_functions
