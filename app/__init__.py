"""Tiffin: a Flask storefront for meal-plan subscriptions."""
from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import load_config, validate_config
from app.db_pool import install_idle_ping
from app.extensions import csrf, db, limiter, login_manager, migrate
from app.security import register_security


def create_app(config: str | dict | None = None) -> Flask:
    """Build the app. `config` is an environment name or a dict of overrides."""
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    env_name = config if isinstance(config, str) else (config or {}).get("TIFFIN_ENV")
    app.config.update(load_config(env_name))
    if isinstance(config, dict):
        app.config.update(config)
    validate_config(app.config)
    if app.config["TRUSTED_PROXY_COUNT"]:
        n = app.config["TRUSTED_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)

    configure_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    register_template_helpers(app)
    register_security(app)
    return app


def configure_logging(app: Flask) -> None:
    from app import logs

    logs.configure(app)


def register_extensions(app: Flask) -> None:
    from app.models import User

    db.init_app(app)
    with app.app_context():
        install_idle_ping(db.engine)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"),
                     render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 0.5,
                                                        "socket_timeout": 0.5})
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to see that page."
    login_manager.login_message_category = "info"

    @login_manager.user_loader
    def load_user(user_id):
        return db.session.get(User, int(user_id))

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        _configure_sqlite(app)


def _configure_sqlite(app: Flask) -> None:
    import os

    from sqlalchemy import event

    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        os.makedirs(os.path.dirname(uri[len("sqlite:///"):]) or ".", exist_ok=True)
    with app.app_context():
        @event.listens_for(db.engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.close()


def register_blueprints(app: Flask) -> None:
    from app.account.routes import bp as account_bp
    from app.auth.routes import bp as auth_bp
    from app.checkout.routes import bp as checkout_bp
    from app.ops.routes import bp as ops_bp
    from app.probes.routes import bp as probes_bp
    from app.payments.routes import bp as payments_bp
    from app.storefront.routes import bp as storefront_bp
    from app.test_gateway.routes import bp as test_gateway_bp
    from app.webhooks.routes import bp as webhooks_bp

    for bp in (storefront_bp, auth_bp, account_bp, checkout_bp, payments_bp, webhooks_bp,
               probes_bp, ops_bp):
        app.register_blueprint(bp)
    if app.config["TEST_GATEWAY_ENABLED"]:
        app.register_blueprint(test_gateway_bp)
    if app.config["TIFFIN_ENV"] == "development":
        from app.dev.routes import bp as dev_bp

        app.register_blueprint(dev_bp)


def register_errorhandlers(app: Flask) -> None:
    from app.errors import register_errorhandlers as register

    register(app)


def register_commands(app: Flask) -> None:
    from app.cli import register as register_cli

    register_cli(app)


def register_template_helpers(app: Flask) -> None:
    from app.config import enabled_gateways
    from app.gateways import gateway_label, gateway_method_hint
    from app.money import format_money, format_when
    from app.services.access import has_access

    app.jinja_env.filters["money"] = format_money
    app.jinja_env.filters["datefmt"] = format_when
    app.jinja_env.filters["gateway_label"] = gateway_label
    app.jinja_env.filters["gateway_method_hint"] = gateway_method_hint
    app.jinja_env.globals["has_access"] = has_access

    @app.context_processor
    def inject_globals():
        return {"gateway_names": enabled_gateways(app.config),
                "support_email": app.config["SUPPORT_EMAIL"],
                "dev_mailbox_link": "dev" in app.blueprints}
