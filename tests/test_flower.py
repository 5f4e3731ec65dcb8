"""Flower started by ``scripts/flower.py``, watching a real Celery worker on a private Redis."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import requests
from celery import Celery
from cryptography.fernet import Fernet

import celery_config
import migrations

from .servers import free_port, require

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "flower.py"
# Database 13 keeps this module's queues apart from the other tests' 14 and 15.
REDIS_DB = 13
USER = "ops"
PASSWORD = "flower test password"
WAIT_SECONDS = 30

T = TypeVar("T")


@dataclass
class Flower:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def wait_for(predicate: Callable[[], T | None], description: str, processes: list[Any]) -> T:
    """Poll ``predicate`` until it returns a truthy value, and fail early if a process exits."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(
                    f"{process.args[:6]} exited with {process.returncode} before {description}"
                )
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {WAIT_SECONDS} s waiting for {description}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture(scope="module")
def app_env(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> dict[str, str]:
    """The environment of a Mailroom worker: a migrated SQLite file and database 13 of Redis."""
    require(
        importlib.util.find_spec("flower") is not None,
        "Flower is not installed (pip install -e '.[dev]')",
    )
    workdir = tmp_path_factory.mktemp("flower")
    redis_url = f"{redis_server}/{REDIS_DB}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLOWER_")}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'mailroom.db'}",
        REDIS_URL=redis_url,
        SECRET_KEY="flower-test-secret-key",
        ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        FILES_ROOT=str(workdir / "files"),
    )
    migrations.upgrade(env["DATABASE_URL"])
    return env


@pytest.fixture(scope="module")
def worker(
    app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ``celery -A worker worker`` process, yielded with its node name."""
    name = f"flower-test-{uuid.uuid4().hex[:8]}@localhost"
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--concurrency", "1",
               "--loglevel", "INFO", "--hostname", name]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=app_env, stdout=output, stderr=output)
    try:
        yield name, process
    finally:
        stop(process)


def start_flower(env: dict[str, str], log: Path) -> Flower:
    """Start Flower through the launcher on a free port and wait until it responds."""
    port = free_port()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--port", str(port)],
            cwd=ROOT, env=env, stdout=output, stderr=output,
        )  # fmt: skip
    prefix = env.get("FLOWER_URL_PREFIX", "")
    url = f"http://127.0.0.1:{port}" + (f"/{prefix}" if prefix else "")

    def responds() -> bool:
        try:
            return requests.get(f"{url}/healthcheck", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(responds, "Flower to respond", [process])
    except BaseException:
        stop(process)
        raise
    return Flower(url=url, process=process, log=log)


@pytest.fixture(scope="module")
def flower(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    # An empty prefix is set, not left out, so a FLOWER_URL_PREFIX in the .env cannot apply.
    env = {**app_env, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}", "FLOWER_URL_PREFIX": ""}
    running = start_flower(env, tmp_path_factory.mktemp("flower-log") / "flower.log")
    try:
        yield running
    finally:
        stop(running.process)


def get_json(url: str) -> Any:
    response = requests.get(url, auth=(USER, PASSWORD), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_flower_lists_worker_and_task(
    flower: Flower, worker: tuple[str, subprocess.Popen[bytes]], app_env: dict[str, str]
) -> None:
    name, process = worker
    workers = wait_for(
        lambda: get_json(f"{flower.url}/api/workers?refresh=1").get(name),
        f"Flower to list the worker {name}",
        [process, flower.process],
    )
    assert "stats" in workers

    sender = Celery("flower-test", broker=app_env["REDIS_URL"], set_as_current=False)
    # Mailroom's routes send the task to the control queue, as beat does.
    sender.config_from_object(celery_config)
    try:
        task_id = sender.send_task("mailroom.outbox.dispatch").id
    finally:
        sender.close()

    def finished_task() -> dict[str, Any] | None:
        task = get_json(f"{flower.url}/api/tasks").get(task_id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_for(finished_task, f"Flower to list task {task_id} as finished", [process])
    assert task["name"] == "mailroom.outbox.dispatch"
    assert task["worker"] == name


def test_flower_requires_credentials(flower: Flower) -> None:
    anonymous = requests.get(f"{flower.url}/api/workers", timeout=10)
    wrong = requests.get(f"{flower.url}/api/workers", auth=(USER, "wrong password"), timeout=10)
    dashboard = requests.get(f"{flower.url}/", timeout=10)
    healthcheck = requests.get(f"{flower.url}/healthcheck", timeout=10)

    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert dashboard.status_code == 401
    assert healthcheck.status_code == 200
    assert healthcheck.text == "OK"


def test_flower_serves_under_url_prefix(app_env: dict[str, str], tmp_path: Path) -> None:
    env = {**app_env, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}", "FLOWER_URL_PREFIX": "flower"}
    running = start_flower(env, tmp_path / "flower.log")
    try:
        assert running.url.endswith("/flower")
        assert get_json(f"{running.url}/api/workers") is not None
        anonymous = requests.get(f"{running.url}/api/workers", timeout=10)
        assert anonymous.status_code == 401
    finally:
        stop(running.process)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # Set but empty, so a FLOWER_BASIC_AUTH in the repository's .env cannot fill it in.
        ("", "FLOWER_BASIC_AUTH is not set"),
        ("   ", "FLOWER_BASIC_AUTH is not set"),
        ("admin", "FLOWER_BASIC_AUTH must be user:password"),
        ("admin:", "FLOWER_BASIC_AUTH must be user:password"),
        (":password", "FLOWER_BASIC_AUTH must be user:password"),
        ("admin:password,guest", "FLOWER_BASIC_AUTH must be user:password"),
    ],
)
def test_launcher_rejects_bad_auth(app_env: dict[str, str], value: str, message: str) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, str(LAUNCHER), "--port", str(port)],
        cwd=ROOT, env={**app_env, "FLOWER_BASIC_AUTH": value},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 2
    assert message in result.stderr
    assert "does not start without a login" in result.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=5)
