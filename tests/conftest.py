"""Shared fixtures: settings on a temporary SQLite file, the app, a logged-in admin.

Server fixtures (Redis, PostgreSQL, Dovecot, the OAuth server) live in
``tests/servers.py``; a missing server skips its tests on a developer
machine and fails them when ``CI`` is set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient

import migrations
from config import Settings
from models import User
from referencedata import seed
from web import create_app
from web.security import hash_password

from .servers import *  # noqa: F403  (fixtures)

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery staple"


def make_settings(tmp_path: Path, redis_url: str, **changes: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'mailroom.db'}",
        "redis_url": redis_url,
        "secret_key": "test-secret-key",
        "encryption_keys": (Fernet.generate_key().decode(),),
        "files_root": tmp_path / "files",
        "testing": True,
        "http_timeout": 10.0,
        "mail_timeout": 10.0,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path, redis_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    migrations.upgrade(settings.database_url)
    app = create_app(settings, TESTING=True)
    yield app
    app.extensions["mailroom"].db.dispose()


@pytest.fixture
def app_context(app: Flask) -> Iterator[None]:
    """An app context for calling domain code that builds mail with Flask-Mail.

    Tests that also make requests must not hold it: requests would share its
    ``g``, and with it Flask-WTF's CSRF token and the request's session.
    """
    with app.app_context():
        yield


@pytest.fixture
def services(app: Flask):  # type: ignore[no-untyped-def]
    return app.extensions["mailroom"]


@pytest.fixture
def db_session(services):  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        yield session


@pytest.fixture
def seeded(services) -> None:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        seed(session)


@pytest.fixture
def admin(services) -> User:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        user = User(
            email=ADMIN_EMAIL,
            name="Admin",
            password_hash=hash_password(ADMIN_PASSWORD),
            is_admin=True,
        )
        session.add(user)
        session.commit()
        return user


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf_token(client: FlaskClient, url: str) -> str:
    """Fetch ``url`` and return the CSRF token of its first form."""
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text) or re.search(
        r'name="csrf_token" value="([^"]+)"', page.text
    )
    assert match, f"no CSRF token on {url}"
    return match.group(1)


@pytest.fixture
def logged_in(client: FlaskClient, admin: User) -> FlaskClient:
    token = csrf_token(client, "/login")
    response = client.post(
        "/login", data={"csrf_token": token, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 302, response.text
    return client
