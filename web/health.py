"""``/healthz``: whether this web process reaches its database and Redis, and beat ticks.

Load balancers and monitors poll it without logging in, so the response
carries only states, ages and exception class names: never a URL, host or
exception message, because those can reveal credentials and topology.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.pool import NullPool
from werkzeug.wrappers import Response

from config import Settings
from tasks.connectors import BEAT_TICK_KEY, WORKER_DONE_KEY

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

# Seconds for each connect and each query. libpq rejects a connect_timeout
# below 2 seconds.
CHECK_TIMEOUT_SECONDS = 3
# A failing check is logged at most once per this many seconds per process,
# because a load balancer polls every few seconds.
LOG_INTERVAL_SECONDS = 60.0

_last_logged: dict[str, float] = {}


def beat_max_age(settings: Settings) -> float:
    """Return the oldest acceptable beat tick in seconds.

    HEALTH_BEAT_MAX_AGE in the app config wins. The default allows two missed
    ticks plus 30 seconds for a slow worker to pick up the tick task.
    """
    configured = current_app.config.get("HEALTH_BEAT_MAX_AGE")
    if configured is not None:
        return float(configured)
    return 3 * settings.beat_tick_seconds + 30


def _log_failure(check: str, exc: Exception) -> None:
    now = time.monotonic()
    if now - _last_logged.get(check, -LOG_INTERVAL_SECONDS) < LOG_INTERVAL_SECONDS:
        return
    _last_logged[check] = now
    logger.warning("health check %s failed: %s: %s", check, type(exc).__name__, exc)


def check_database(url: str) -> dict[str, Any]:
    """Run ``SELECT 1`` on a fresh connection with connect and statement timeouts.

    The app's own engine has no connect timeout, so the check opens its own
    unpooled connection. That also proves that a new connection can be made.
    """
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=_timeout_args(url))
    started = time.perf_counter()
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                milliseconds = CHECK_TIMEOUT_SECONDS * 1000
                connection.execute(sa.text(f"SET LOCAL statement_timeout = {milliseconds}"))
            # NOTE: a PostgreSQL server that accepts the connection and then
            # stops responding is bounded only by the kernel's TCP timeouts.
            connection.execute(sa.text("SELECT 1"))
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        _log_failure("database", exc)
        return {"status": "fail", "error": type(exc).__name__}
    finally:
        engine.dispose()
    return {"status": "ok", "seconds": round(time.perf_counter() - started, 3)}


def _timeout_args(url: str) -> dict[str, Any]:
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "postgresql":
        return {"connect_timeout": CHECK_TIMEOUT_SECONDS}
    if backend == "sqlite":
        # How long to wait for a writer's lock before failing.
        return {"timeout": CHECK_TIMEOUT_SECONDS}
    return {}


def check_redis(url: str) -> tuple[dict[str, Any], list[bytes | str | None]]:
    """PING Redis and read the beat and worker keys, returning the result and the raw values.

    A client of its own carries the short timeouts and no retries, so a
    Redis that is down fails the check in seconds.
    """
    client = redis.Redis.from_url(
        url,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    started = time.perf_counter()
    try:
        client.ping()
        values = client.mget([BEAT_TICK_KEY, WORKER_DONE_KEY])
    except redis.RedisError as exc:
        _log_failure("redis", exc)
        return {"status": "fail", "error": type(exc).__name__}, [None, None]
    finally:
        client.close()
    result = {"status": "ok", "seconds": round(time.perf_counter() - started, 3)}
    return result, values


def seconds_since(raw: bytes | str | None, now: float) -> float | None:
    """Return the age of a ``time.time()`` value stored as text, or None if absent or invalid."""
    if raw is None:
        return None
    try:
        stamp = float(raw)
    except ValueError:
        return None
    # A writer whose clock runs ahead of this host's would give a negative age.
    return round(max(now - stamp, 0.0), 1)


def age_report(name: str, age: float | None, max_age: float, late_status: str) -> dict[str, Any]:
    """Describe one heartbeat: ``late_status`` when it is missing or older than ``max_age``."""
    status = "ok" if age is not None and age <= max_age else late_status
    return {"status": status, name: age, "max_age_seconds": max_age}


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Return 200 when the database and Redis respond and beat ticked recently, else 503.

    The worker's age, held to the same limit as beat's, only lowers the
    status to "degraded", because workers with no task to run are idle.
    """
    settings: Settings = current_app.extensions["mailroom"].settings
    database = check_database(settings.database_url)
    redis_result, (beat_raw, worker_raw) = check_redis(settings.redis_url)

    now = time.time()
    max_age = beat_max_age(settings)
    beat = age_report("last_tick_seconds_ago", seconds_since(beat_raw, now), max_age, "fail")
    worker = age_report(
        "last_task_done_seconds_ago", seconds_since(worker_raw, now), max_age, "degraded"
    )

    if "fail" in (database["status"], redis_result["status"], beat["status"]):
        status, code = "fail", 503
    elif worker["status"] != "ok":
        status, code = "degraded", 200
    else:
        status, code = "ok", 200

    body = {
        "status": status,
        "database": database,
        "redis": redis_result,
        "beat": beat,
        "worker": worker,
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, code
