"""``/healthz`` against a real Redis, SQLite and PostgreSQL, without logging in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask
from flask.testing import FlaskClient

from tasks.connectors import BEAT_TICK_KEY, WORKER_DONE_KEY
from web import create_app

from .conftest import make_settings
from .servers import free_port

# BEAT_TICK_SECONDS defaults to 5, so the default limit is 3 * 5 + 30.
DEFAULT_MAX_AGE = 45.0


@contextmanager
def built_app(tmp_path: Path, redis_url: str, **changes: Any) -> Iterator[Flask]:
    """An app on other settings; upper-case keywords go to the Flask config."""
    config = {key: changes.pop(key) for key in list(changes) if key.isupper()}
    app = create_app(make_settings(tmp_path, redis_url, **changes), TESTING=True, **config)
    try:
        yield app
    finally:
        app.extensions["mailroom"].db.dispose()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


def get_health(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/healthz")
    assert response.is_json, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.status_code, response.get_json()


def test_healthz_ok_with_recent_tick(client: FlaskClient, redis_client: redis_lib.Redis) -> None:
    redis_client.set(BEAT_TICK_KEY, str(time.time() - 2))
    redis_client.set(WORKER_DONE_KEY, str(time.time() - 3))

    code, body = get_health(client)

    assert code == 200
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok"
    assert body["redis"]["status"] == "ok"
    assert body["beat"]["status"] == "ok"
    assert 2 <= body["beat"]["last_tick_seconds_ago"] < 10
    assert body["beat"]["max_age_seconds"] == DEFAULT_MAX_AGE
    assert body["worker"]["status"] == "ok"
    assert 3 <= body["worker"]["last_task_done_seconds_ago"] < 10


def test_healthz_degraded_without_worker(
    client: FlaskClient, redis_client: redis_lib.Redis
) -> None:
    redis_client.set(BEAT_TICK_KEY, str(time.time()))

    code, body = get_health(client)

    assert code == 200
    assert body["status"] == "degraded"
    assert body["beat"]["status"] == "ok"
    assert body["worker"]["status"] == "degraded"
    assert body["worker"]["last_task_done_seconds_ago"] is None


def test_healthz_degraded_with_old_worker(
    client: FlaskClient, redis_client: redis_lib.Redis
) -> None:
    redis_client.set(BEAT_TICK_KEY, str(time.time()))
    redis_client.set(WORKER_DONE_KEY, str(time.time() - DEFAULT_MAX_AGE - 60))

    code, body = get_health(client)

    assert code == 200
    assert body["status"] == "degraded"
    assert body["worker"]["last_task_done_seconds_ago"] > DEFAULT_MAX_AGE


def test_healthz_fails_without_tick(client: FlaskClient, redis_client: redis_lib.Redis) -> None:
    redis_client.set(WORKER_DONE_KEY, str(time.time()))

    code, body = get_health(client)

    assert code == 503
    assert body["status"] == "fail"
    assert body["database"]["status"] == "ok"
    assert body["redis"]["status"] == "ok"
    assert body["beat"]["status"] == "fail"
    assert body["beat"]["last_tick_seconds_ago"] is None


def test_healthz_fails_with_old_tick(client: FlaskClient, redis_client: redis_lib.Redis) -> None:
    redis_client.set(BEAT_TICK_KEY, str(time.time() - DEFAULT_MAX_AGE - 5))
    redis_client.set(WORKER_DONE_KEY, str(time.time()))

    code, body = get_health(client)

    assert code == 503
    assert body["status"] == "fail"
    assert body["beat"]["status"] == "fail"
    assert body["beat"]["last_tick_seconds_ago"] > DEFAULT_MAX_AGE


def test_healthz_fails_with_unreadable_tick(
    client: FlaskClient, redis_client: redis_lib.Redis
) -> None:
    redis_client.set(BEAT_TICK_KEY, "not a time")

    code, body = get_health(client)

    assert code == 503
    assert body["beat"]["last_tick_seconds_ago"] is None


def test_healthz_limit_follows_beat_interval(
    tmp_path: Path, redis_url: str, redis_client: redis_lib.Redis
) -> None:
    # With a 1-second tick the limit is 3 * 1 + 30 = 33 seconds.
    redis_client.set(BEAT_TICK_KEY, str(time.time() - 40))
    with built_app(tmp_path, redis_url, beat_tick_seconds=1.0) as app:
        code, body = get_health(app.test_client())
        assert code == 503
        assert body["beat"]["max_age_seconds"] == 33.0


def test_healthz_limit_from_config(
    tmp_path: Path, redis_url: str, redis_client: redis_lib.Redis
) -> None:
    redis_client.set(BEAT_TICK_KEY, str(time.time() - 100))
    with built_app(tmp_path, redis_url, HEALTH_BEAT_MAX_AGE=300) as app:
        code, body = get_health(app.test_client())
        assert code == 200
        assert body["beat"]["status"] == "ok"
        assert body["beat"]["max_age_seconds"] == 300.0


def test_healthz_fails_when_redis_unreachable(tmp_path: Path) -> None:
    password = f"redis-secret-{uuid.uuid4().hex}"
    port = free_port()  # bound and released: nothing listens there
    url = f"redis://:{password}@127.0.0.1:{port}/0"

    with built_app(tmp_path, url) as app:
        started = time.monotonic()
        response = app.test_client().get("/healthz")
        elapsed = time.monotonic() - started

    body = response.get_json()
    assert response.status_code == 503
    assert body["status"] == "fail"
    assert body["database"]["status"] == "ok"
    assert body["redis"] == {"status": "fail", "error": "ConnectionError"}
    assert body["beat"]["status"] == "fail"
    assert elapsed < 10
    assert password not in response.text
    assert str(port) not in response.text
    assert "redis://" not in response.text


def test_healthz_hides_redis_credentials(
    tmp_path: Path, redis_server: str, redis_client: redis_lib.Redis
) -> None:
    """A Redis user with a password: the right one passes, a wrong one fails, neither shows."""
    user = f"health-{uuid.uuid4().hex[:8]}"
    password = f"redis-secret-{uuid.uuid4().hex}"
    redis_client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"],
                             commands=["+@all"])  # fmt: skip
    redis_client.set(BEAT_TICK_KEY, str(time.time()))
    host_port = redis_server.removeprefix("redis://")
    try:
        with built_app(tmp_path / "right", f"redis://{user}:{password}@{host_port}/15") as app:
            right = app.test_client().get("/healthz")
        with built_app(
            tmp_path / "wrong", f"redis://{user}:wrong-{password}@{host_port}/15"
        ) as app:
            wrong = app.test_client().get("/healthz")
    finally:
        redis_client.acl_deluser(user)

    assert right.status_code == 200
    assert right.get_json()["redis"]["status"] == "ok"
    assert wrong.status_code == 503
    assert wrong.get_json()["redis"] == {"status": "fail", "error": "AuthenticationError"}
    for response in (right, wrong):
        assert password not in response.text
        assert user not in response.text
        assert host_port not in response.text


def test_healthz_fails_when_database_unreachable(
    tmp_path: Path, redis_url: str, redis_client: redis_lib.Redis
) -> None:
    redis_client.set(BEAT_TICK_KEY, str(time.time()))
    redis_client.set(WORKER_DONE_KEY, str(time.time()))
    directory = tmp_path / "not-a-database"
    directory.mkdir()

    with built_app(tmp_path, redis_url, database_url=f"sqlite:///{directory}") as app:
        code, body = get_health(app.test_client())

    assert code == 503
    assert body["status"] == "fail"
    assert body["database"] == {"status": "fail", "error": "OperationalError"}
    assert body["redis"]["status"] == "ok"
    assert body["beat"]["status"] == "ok"


def test_healthz_on_postgresql(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_client: redis_lib.Redis
) -> None:
    redis_client.set(BEAT_TICK_KEY, str(time.time()))
    redis_client.set(WORKER_DONE_KEY, str(time.time()))

    with built_app(tmp_path, redis_url, database_url=postgres_url) as app:
        code, body = get_health(app.test_client())

    assert code == 200
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok"


def test_healthz_fails_when_postgresql_unreachable(
    tmp_path: Path, redis_url: str, redis_client: redis_lib.Redis
) -> None:
    redis_client.set(BEAT_TICK_KEY, str(time.time()))
    password = f"pg-secret-{uuid.uuid4().hex}"
    url = f"postgresql+psycopg://mailroom:{password}@127.0.0.1:{free_port()}/mailroom"

    with built_app(tmp_path, redis_url, database_url=url) as app:
        response = app.test_client().get("/healthz")

    assert response.status_code == 503
    assert response.get_json()["database"] == {"status": "fail", "error": "OperationalError"}
    assert password not in response.text
    assert "postgresql" not in response.text
