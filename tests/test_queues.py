"""The scans and control queues: routing, and beat's ticks while every scan slot is busy.

The integration test starts the workers the way ``make run`` does: one
worker for the scans queue with a single process, and one for the control
queue. A connector whose IMAP server accepts the connection but never sends
a greeting keeps the only scan process busy, which is what a slow mail
server does in production. Beat's ticks and the outbox must still run.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import sqlalchemy as sa
from cryptography.fernet import Fernet
from flask import Flask

import migrations
from celery_config import CONTROL_CONCURRENCY, CONTROL_QUEUE, CONTROL_TASKS, SCANS_QUEUE
from database import Database
from launcher import worker_command
from mailauth import SecretBox
from models import AuthMethod, Client, Connector, OutboxMessage, OutboxStatus
from referencedata import seed

from .servers import require

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Database 12 keeps these queues apart from the other tests' 13, 14 and 15.
REDIS_DB = 12
# Generous, because the test machine may be busy. The checks wait for events,
# never for a fixed time.
WAIT_SECONDS = 90
# Longer than the test, so the stalled scan keeps its process busy until
# teardown closes the connection.
STALLED_SCAN_TIMEOUT = 600

T = TypeVar("T")


def test_control_tasks_route_to_control_queue(app: Flask) -> None:
    celery = app.extensions["celery"]
    for name in CONTROL_TASKS:
        assert celery.amqp.router.route({}, name)["queue"].name == CONTROL_QUEUE, name
    scan_route = celery.amqp.router.route({}, "mailroom.connectors.scan")
    assert scan_route["queue"].name == SCANS_QUEUE


def test_queues_do_not_share_a_routing_key(app: Flask) -> None:
    """A message for one queue must not also land in the other."""
    queues = app.extensions["celery"].amqp.queues
    assert set(queues) == {SCANS_QUEUE, CONTROL_QUEUE}
    bindings = {(queue.exchange.name, queue.routing_key) for queue in queues.values()}
    assert len(bindings) == 2


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _address = self.listener.accept()
            except OSError:
                return  # closed by stop()
            with self._lock:
                self.connections.append(connection)

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self.connections)

    def stop(self) -> None:
        """Close the listener and every connection, which ends the stalled scans at once."""
        # shutdown() wakes the thread blocked in accept(). On Linux, close() alone does not.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for connection in self.connections:
                connection.close()
        self._thread.join(10)


def wait_for(
    predicate: Callable[[], T | None], description: str, processes: list[subprocess.Popen[bytes]]
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and fail early if a process exits."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                words = process.args if isinstance(process.args, list) else [process.args]
                command = " ".join(str(word) for word in words[3:7])
                pytest.fail(f"{command} exited with {process.returncode} before {description}")
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {WAIT_SECONDS} s waiting for {description}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _add_connector(db: Database, box: SecretBox, name: str, port: int) -> int:
    with db.session() as session:
        client = session.scalars(sa.select(Client).order_by(Client.id)).first()
        assert client is not None
        connector = Connector(
            name=name,
            client=client,
            auth_method=AuthMethod.PASSWORD,
            host="127.0.0.1",
            port=port,
            use_ssl=False,
            username="stalled@example.com",
            password_encrypted=box.encrypt("never checked"),
            interval_minutes=60,
            next_run_at=None,
        )
        session.add(connector)
        session.commit()
        return connector.id


def _next_run(db: Database, connector_id: int) -> datetime | None:
    with db.session() as session:
        return session.scalar(sa.select(Connector.next_run_at).where(Connector.id == connector_id))


def _make_due(db: Database, connector_id: int, due: datetime) -> None:
    with db.session() as session:
        session.execute(
            sa.update(Connector).where(Connector.id == connector_id).values(next_run_at=due)
        )
        session.commit()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def app_env(tmp_path: Path, redis_server: str) -> dict[str, Any]:
    redis_url = f"{redis_server}/{REDIS_DB}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    key = Fernet.generate_key().decode()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'mailroom.db'}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": "queue-test-secret-key",
        "ENCRYPTION_KEYS": key,
        "FILES_ROOT": str(tmp_path / "files"),
        "BEAT_TICK_SECONDS": "1",
        # The test reads the tick's receipt from the control worker's log.
        "LOG_ROUTINE_TASKS": "1",
        "MAIL_TIMEOUT": str(STALLED_SCAN_TIMEOUT),
        "LOG_FORMAT": "text",
    }
    migrations.upgrade(env["DATABASE_URL"])
    return env


@pytest.fixture
def celery_processes(
    app_env: dict[str, str], tmp_path: Path, silent_server: SilentServer
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One scan worker with one process, the control worker, and beat."""
    require((BIN / "celery").exists(), f"{BIN / 'celery'} is missing; run make .venv/.installed")
    commands = {
        "scans": worker_command(BIN / "celery", SCANS_QUEUE, 1),
        "control": worker_command(BIN / "celery", CONTROL_QUEUE, CONTROL_CONCURRENCY),
        "beat": [str(BIN / "celery"), "-A", "worker", "beat", "--loglevel", "INFO",
                 "--schedule", str(tmp_path / "beat-schedule")],
    }  # fmt: skip
    processes = []
    logs = []
    try:
        for name, command in commands.items():
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            processes.append(
                subprocess.Popen(command, cwd=ROOT, env=app_env, stdout=log, stderr=log)
            )
        yield processes
    finally:
        # Closing the connections first ends the stalled scan, so the scan
        # worker's warm shutdown does not wait for it.
        silent_server.stop()
        # Beat first, so that no tick waits for a worker that has stopped.
        for process in reversed(processes):
            stop(process)
        for log in logs:
            log.close()


def test_tick_runs_while_scan_slots_busy(
    app_env: dict[str, str],
    silent_server: SilentServer,
    celery_processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    db = Database(app_env["DATABASE_URL"])
    box = SecretBox([app_env["ENCRYPTION_KEYS"]])
    queue = redis.Redis.from_url(app_env["REDIS_URL"])
    try:
        with db.session() as session:
            seed(session)
        stalled = _add_connector(db, box, "Stalled server", silent_server.port)
        waiting = _add_connector(db, box, "Waiting for a free process", silent_server.port)

        # Beat's tick claims the first connector, and its scan takes the only
        # scan process and hangs on the IMAP greeting.
        _make_due(db, stalled, datetime.now(UTC))
        wait_for(
            lambda: silent_server.accepted >= 1,
            "the first scan to connect to the silent server",
            celery_processes,
        )

        # Only a tick run by the control worker can claim the second connector now.
        due = datetime.now(UTC)
        _make_due(db, waiting, due)
        with db.session() as session:
            outbox = OutboxMessage(
                event="project_created",
                recipients="maria.lopez@example.com",
                subject="Sent while the scans are busy",
                body="A notification waits for the control worker, not for a scan.",
                message_id="<queues-test@mailroom.invalid>",
                status=OutboxStatus.PENDING,
                next_attempt_at=due,
            )
            session.add(outbox)
            session.commit()
            outbox_id = outbox.id

        def claimed() -> bool:
            next_run = _next_run(db, waiting)
            return next_run is not None and next_run > due

        wait_for(claimed, "a tick to claim the second connector", celery_processes)

        # The tick enqueues the scan just after its claim commits. The scan
        # waits in the queue, because the first scan occupies the only process.
        wait_for(
            lambda: queue.llen(SCANS_QUEUE) >= 1,
            "the second connector's scan to be queued",
            celery_processes,
        )
        assert queue.llen(SCANS_QUEUE) == 1
        assert silent_server.accepted == 1

        def outbox_attempted() -> OutboxMessage | None:
            with db.session() as session:
                row = session.get(OutboxMessage, outbox_id)
                return row if row is not None and row.attempts > 0 else None

        row = wait_for(outbox_attempted, "the control worker to send the outbox row", [])
        # No SMTP server is configured, so the send fails for good. That failure
        # shows that the send ran.
        assert row.status == OutboxStatus.FAILED
        assert "No SMTP server is configured" in (row.last_error or "")
        assert silent_server.accepted == 1
    finally:
        queue.close()
        db.dispose()
    # The banner lists every registered task, so look for the receipt of one.
    tick_received = re.compile(r"Task mailroom\.connectors\.enqueue_due\[[^]]+\] received")
    assert tick_received.search((tmp_path / "control.log").read_text(errors="replace"))
    assert not tick_received.search((tmp_path / "scans.log").read_text(errors="replace"))
