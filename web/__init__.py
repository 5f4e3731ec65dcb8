"""The Flask application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from config import Settings, load_settings
from logconfig import configure_logging
from runtime import build_services

from .celery_app import celery_init_app
from .db import close_db_session, db_session
from .extensions import bootstrap, csrf, login_manager, mail
from .formatting import utc_time


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the app: settings, logging, services, extensions, Celery, views."""
    settings = settings or load_settings()
    configure_logging(settings.log_format)

    app = Flask(__name__, template_folder="../templates", static_folder="static")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        BOOTSTRAP_SERVE_LOCAL=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(settings.public_url and settings.public_url.startswith("https")),
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        MAILROOM_PUBLIC_URL=settings.public_url,
        HEALTH_BEAT_MAX_AGE=settings.health_beat_max_age,
        FLOWER_URL=settings.flower_url,
    )
    app.config.update(overrides)

    services = build_services(settings)
    services.store.ensure()
    app.extensions["mailroom"] = services

    app.teardown_appcontext(close_db_session)

    @app.context_processor
    def links() -> dict[str, object]:
        return {"flower_url": app.config.get("FLOWER_URL")}

    app.add_template_filter(utc_time)
    register_error_pages(app)

    register_extensions(app)
    celery_init_app(app, services)
    register_blueprints(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    bootstrap.init_app(app)
    csrf.init_app(app)
    mail.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "warning"

    from models import User

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        # The request's own session: one pooled connection per request, so
        # one pre-ping instead of two.
        user = db_session().get(User, int(user_id))
        return user if user is not None and user.is_active else None


ERROR_PAGES = {
    400: ("Bad request", "The request was not valid. Reload the page and try again."),
    403: ("Not allowed", "Your account may not do this. Ask an admin."),
    404: ("Not found", "This page does not exist, or what it showed was deleted."),
    405: ("Not allowed", "This address does not take that kind of request."),
}


def register_error_pages(app: Flask) -> None:
    """Show errors inside the app's layout, with a way back, instead of a bare page."""

    def render(error: HTTPException) -> tuple[str, int]:
        code = error.code or 500
        title, message = ERROR_PAGES[code]
        return render_template("errors/error.html", title=title, message=message), code

    for code in ERROR_PAGES:
        app.register_error_handler(code, render)


def register_blueprints(app: Flask) -> None:
    from . import api, auth, branches, connectors, email_settings, health, jobs, main, oauth

    app.register_blueprint(auth.bp)
    app.register_blueprint(main.bp)
    app.register_blueprint(connectors.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(email_settings.bp)
    app.register_blueprint(branches.bp)
    app.register_blueprint(health.bp)


def register_commands(app: Flask) -> None:
    from .cli import register

    register(app)
