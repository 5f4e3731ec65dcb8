"""Connector scale: many connectors due every minute, scanned by Celery beat and workers.

The benchmark starts a private Redis and a Dovecot on 127.0.0.1, migrates a
database, and creates N active password connectors, each reading its own empty
folder every minute. It then runs Celery beat and worker processes exactly as a
deployment does (``celery -A worker beat``, ``celery -A worker worker --queues
scans`` per scan worker and one ``celery -A worker worker --queues control``)
for a fixed window, and measures from the database how punctually the scans
start.

Due times come from the ``next_run_at`` column. ``claim_due_connectors`` moves
a due connector's ``next_run_at`` to the claim time plus the interval, so every
value the column takes is a due time, and the claim that wrote it happened
exactly one interval earlier. This process reads the column every
POLL_SECONDS, much less than the 60 s a value stays in place, so it reads every
value. Each claim enqueues one scan, and the workers take scans in queue order,
so the k-th scheduled run of a connector belongs to its k-th due time; a run
that started before its claim would show that this pairing failed. The start
delay of a due time is its run's ``started_at`` minus the due time, and splits
into due time to claim (beat's tick) and claim to ``started_at`` (the queue).

Run ``python -m benchmarks.connector_scale --help`` from the repository root.
Linux only, because the CPU figures come from /proc.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import IO, TYPE_CHECKING

import redis
import sqlalchemy as sa

from celery_config import CONTROL_CONCURRENCY, CONTROL_QUEUE, SCANS_QUEUE

if TYPE_CHECKING:
    from devservers.dovecot import Dovecot

logger = logging.getLogger("benchmarks.connector_scale")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

MAILBOX_USER = "scale@example.com"
INTERVAL = timedelta(minutes=1)
"""Every connector is scheduled every minute (``interval_minutes`` 1)."""
DELAY_TARGET = 5.0
"""Seconds: the 99th percentile of the start delay must stay under this."""
GAP_LIMIT = INTERVAL.total_seconds() + DELAY_TARGET
"""Seconds without a scan start after which a connector was not scanned every minute."""
POLL_SECONDS = 0.5
"""How often this process reads every connector's ``next_run_at`` and the queue length."""
DRAIN_LIMIT = 120.0
"""Seconds after the window to wait for the scans of due times inside it to start."""
START_TIMEOUT = 60.0
"""Seconds to wait for Redis, the workers' replies to ping, and beat's first tick."""
STOP_TIMEOUT = 30.0
"""Seconds a Celery process gets after SIGTERM to finish its task before SIGKILL."""
DUE_LEAD_SECONDS = 3.0
"""The first due time lies this far after the moment the due times are written."""
DOVECOT_CONNECTIONS_PER_USER = 10
"""Dovecot 2.3's default ``mail_max_userip_connections``: IMAP sessions per user and IP."""

QUEUE_KEY = SCANS_QUEUE
"""The Redis list of the scans queue. Beat's ticks wait in the control queue."""
BEAT_TICK_KEY = "mailroom:beat:last-tick"
"""Set by every tick of ``mailroom.connectors.enqueue_due``; see tasks/connectors.py."""


class BenchmarkError(RuntimeError):
    """A server, a process or a check failed, so the figures of this run mean nothing."""


# Helpers shared with benchmarks.page_latency


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: Sequence[float], percent: float) -> float:
    """Return the nearest-rank percentile of ``values``, which may contain math.inf."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def code_version() -> str:
    """Return the short commit of the checkout, marked when files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (git failed)"
    return f"{commit} with uncommitted changes" if status.strip() else commit


def _redis_responds(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@contextmanager
def private_redis(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run a redis-server on a free TCP port of 127.0.0.1 and yield its URL and process.

    TCP, not a Unix socket, because Celery's broker URL and redis-py's
    ``from_url`` spell socket URLs differently, and Mailroom uses one
    REDIS_URL for both.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchmarkError(
            "redis-server is not installed. Install it (Debian: apt-get install redis-server)"
        )
    port = free_port()
    data_dir = workdir / "redis"
    data_dir.mkdir()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    command += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _redis_responds(url):
            if process.poll() is not None:
                raise BenchmarkError(f"redis-server exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"redis-server did not respond to PING on port {port}")
            time.sleep(0.05)
        logger.info("redis-server pid %d listens on 127.0.0.1:%d", process.pid, port)
        yield url, process
    finally:
        stop_process(process, "redis-server")


@contextmanager
def postgres_database(server_url: str, prefix: str) -> Iterator[str]:
    """Create an empty PostgreSQL database on the server of ``server_url``, then drop it.

    ``server_url`` names any database the user may connect to, for example
    ``postgres``, because CREATE DATABASE runs outside of a transaction there.
    DROP DATABASE ... WITH (FORCE) needs PostgreSQL 13 or later.
    """
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        engine.dispose()
        raise BenchmarkError(
            f"cannot create a database at {server_url}: {error.orig}. "
            "Start PostgreSQL, or pass --database-url with an empty database"
        ) from error
    logger.info("created database %s", name)
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
        logger.info("dropped database %s", name)


def stop_process(process: subprocess.Popen[bytes], name: str, timeout: float = 10.0) -> None:
    """Send SIGTERM to ``process``, and SIGKILL when it has not exited after ``timeout`` s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning(
            "%s (pid %d) ignored SIGTERM for %g s; killing it", name, process.pid, timeout
        )
        process.kill()
        process.wait()


# CPU accounting from /proc


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcessStat:
    ppid: int
    name: str
    cpu_seconds: float
    """User and system time of the process and of its children that it has waited for."""


def process_table() -> dict[int, ProcessStat]:
    """Read /proc/PID/stat of every process."""
    table: dict[int, ProcessStat] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # The process exited while the table was read.
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        table[int(entry.name)] = ProcessStat(int(fields[1]), name, ticks / _CLOCK_TICKS)
    return table


def tree_cpu(table: dict[int, ProcessStat], roots: Sequence[int]) -> float:
    """Sum the CPU seconds of ``roots`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    total = 0.0
    pending = [pid for pid in roots if pid in table]
    while pending:
        pid = pending.pop()
        total += table[pid].cpu_seconds
        pending.extend(children.get(pid, []))
    return total


def postgres_roots(table: dict[int, ProcessStat]) -> list[int]:
    """Return the PostgreSQL postmasters: ``postgres`` processes whose parent is not one."""
    return [
        pid
        for pid, stat in table.items()
        if stat.name.startswith("postgres")
        and not table.get(stat.ppid, ProcessStat(0, "", 0.0)).name.startswith("postgres")
    ]


def machine_cpu() -> tuple[float, float]:
    """Return (busy, total) CPU seconds of all cores since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    total = sum(values[:8])  # guest time is already counted in user time
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


def other_cpu(machine_busy: float, groups: dict[str, float]) -> float:
    """Return the machine's busy CPU time that none of ``groups`` used, at least 0.

    Per-process times and the machine's totals come from different kernel
    counters, read a moment apart, and disagree by a few percent. A small
    negative rest is that error, not a measurement.
    """
    return max(0.0, machine_busy - sum(groups.values()))


@dataclass
class CpuSample:
    groups: dict[str, float]
    machine_busy: float
    machine_total: float


def sample_cpu(groups: dict[str, list[int]]) -> CpuSample:
    table = process_table()
    values = {name: tree_cpu(table, roots) for name, roots in groups.items()}
    values["PostgreSQL server (all databases)"] = tree_cpu(table, postgres_roots(table))
    # Its live children are the servers and Celery processes, counted above.
    values["this benchmark process"] = table[os.getpid()].cpu_seconds
    busy, total = machine_cpu()
    return CpuSample(values, busy, total)


# Servers, database and connectors


def create_folders(dovecot: Dovecot, names: Sequence[str]) -> None:
    """Create the empty folders through the harness's master session."""
    started = time.perf_counter()
    with dovecot.master_session(MAILBOX_USER) as imap:
        for name in names:
            status, data = imap.create(f'"{name}"')
            if status != "OK":
                raise BenchmarkError(f"CREATE {name} failed: {data!r}")
    logger.info("created %d folders in %.1f s", len(names), time.perf_counter() - started)


def folder_name(number: int) -> str:
    return f"c{number:04d}"


@dataclass(frozen=True)
class Mailbox:
    """Login details of the connectors: one Dovecot user, one folder per connector."""

    host: str
    port: int
    use_ssl: bool
    password: str


def prepare_database(
    database_url: str, encryption_key: str, connectors: int, mailbox: Mailbox
) -> None:
    """Migrate, seed reference data and insert the connectors, not yet scheduled.

    ``next_run_at`` stays NULL, so beat claims nothing until the workers are
    ready and ``schedule_connectors`` writes the due times.
    """
    import migrations
    from database import Database
    from mailauth import SecretBox
    from models import AfterProcessing, AuthMethod, Client, Connector, JobKind
    from referencedata import seed

    migrations.upgrade(database_url)
    db = Database(database_url)
    box = SecretBox([encryption_key])
    try:
        with db.session() as session:
            seed(session)
            session.commit()
            client_id = session.scalars(sa.select(Client.id).order_by(Client.id)).first()
            if client_id is None:
                raise BenchmarkError("the reference data has no client for the connectors")
            password = box.encrypt(mailbox.password)
            rows: list[dict[str, object]] = [
                {
                    "name": f"Scale connector {folder_name(number)}",
                    "job_kind": JobKind.PROJECT,
                    "active": True,
                    "client_id": client_id,
                    "auth_method": AuthMethod.PASSWORD,
                    "host": mailbox.host,
                    "port": mailbox.port,
                    "use_ssl": mailbox.use_ssl,
                    "username": MAILBOX_USER,
                    "password_encrypted": password,
                    "folder": folder_name(number),
                    "after_processing": AfterProcessing.DELETE,
                    "interval_minutes": int(INTERVAL.total_seconds() // 60),
                    "next_run_at": None,
                    "rules": {},
                    "options": {},
                    "notifications": {},
                }
                for number in range(1, connectors + 1)
            ]
            session.execute(sa.insert(Connector), rows)
            session.commit()
    finally:
        db.dispose()


def schedule_connectors(engine: sa.Engine, start: datetime) -> dict[int, datetime]:
    """Spread the first due times evenly over one interval from ``start`` and return them.

    Connectors added over weeks are due at scattered moments, which even
    spacing stands for. Due times that all fall on one moment would be a
    burst, whose last scan waits until all the others have run.
    """
    from models import Connector

    with engine.begin() as connection:
        ids = list(connection.scalars(sa.select(Connector.id).order_by(Connector.id)))
        step = INTERVAL / len(ids)
        dues = {connector_id: start + index * step for index, connector_id in enumerate(ids)}
        connection.execute(
            sa.update(Connector)
            .where(Connector.id == sa.bindparam("connector_id"))
            .values(next_run_at=sa.bindparam("due")),
            [{"connector_id": key, "due": value} for key, value in dues.items()],
        )
    return dues


# Celery processes


@dataclass
class CeleryProcesses:
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """The scan workers."""
    control: subprocess.Popen[bytes] | None = None
    """The worker of the control queue: beat's ticks and the outbox."""
    beat: subprocess.Popen[bytes] | None = None
    logs: list[IO[bytes]] = field(default_factory=list)

    def all_workers(self) -> list[subprocess.Popen[bytes]]:
        return [*self.workers, *([self.control] if self.control else [])]

    def all(self) -> list[subprocess.Popen[bytes]]:
        return [*self.all_workers(), *([self.beat] if self.beat else [])]

    def check_running(self) -> None:
        for process in self.all():
            if process.poll() is not None:
                raise BenchmarkError(
                    f"{_describe(process)} (pid {process.pid}) exited "
                    f"with status {process.returncode}; see the logs in --log-dir"
                )


def _describe(process: subprocess.Popen[bytes]) -> str:
    """Return the command words after the program, such as ``-A worker beat``."""
    words = process.args if isinstance(process.args, list) else [process.args]
    return " ".join(str(word) for word in words[1:4])


def celery_environment(
    database_url: str,
    redis_url: str,
    encryption_key: str,
    workdir: Path,
    ca_file: Path,
    tick: float,
) -> dict[str, str]:
    """Return the environment that load_settings reads in the workers and in beat."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(32),
        "ENCRYPTION_KEYS": encryption_key,
        "FILES_ROOT": str(workdir / "files"),
        "MAIL_CA_FILE": str(ca_file),
        "BEAT_TICK_SECONDS": f"{tick:g}",
        # The tick counts are read from beat's and the workers' logs.
        "LOG_ROUTINE_TASKS": "1",
        "LOG_FORMAT": "text",
    }


def _start(
    processes: CeleryProcesses, command: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    processes.logs.append(log)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    logger.info("started %s (pid %d), log %s", " ".join(command[1:4]), process.pid, log_path)
    return process


def start_workers(
    processes: CeleryProcesses, count: int, concurrency: int, env: dict[str, str], log_dir: Path
) -> None:
    """Start ``count`` scan workers and the control worker, as operations.md describes."""
    for number in range(1, count + 1):
        command = [str(BIN / "celery"), "-A", "worker", "worker", "--loglevel", "INFO"]
        command += ["--queues", SCANS_QUEUE, "--concurrency", str(concurrency)]
        command += ["--hostname", f"scale{number}@%h"]
        processes.workers.append(_start(processes, command, env, log_dir / f"worker{number}.log"))
    command = [str(BIN / "celery"), "-A", "worker", "worker", "--loglevel", "INFO"]
    command += ["--queues", CONTROL_QUEUE, "--concurrency", str(CONTROL_CONCURRENCY)]
    command += ["--hostname", "control@%h"]
    processes.control = _start(processes, command, env, log_dir / "control.log")


def start_beat(
    processes: CeleryProcesses, env: dict[str, str], workdir: Path, log_dir: Path
) -> None:
    command = [str(BIN / "celery"), "-A", "worker", "beat", "--loglevel", "INFO"]
    command += ["--schedule", str(workdir / "beat-schedule")]
    processes.beat = _start(processes, command, env, log_dir / "beat.log")


def wait_for_workers(redis_url: str, count: int, processes: CeleryProcesses) -> None:
    """Wait until ``count`` workers reply to a broadcast ping."""
    from celery import Celery

    app = Celery("connector-scale-probe", broker=redis_url)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            processes.check_running()
            replies = app.control.ping(timeout=1.0)
            if len(replies) >= count:
                logger.info("%d workers replied to ping", len(replies))
                return
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"{len(replies)} of {count} workers replied to ping within {START_TIMEOUT} s"
                )
    finally:
        app.close()


def wait_for_tick(client: redis.Redis, processes: CeleryProcesses) -> None:
    """Wait until a worker has run one of beat's ticks."""
    deadline = time.monotonic() + START_TIMEOUT
    while client.get(BEAT_TICK_KEY) is None:
        processes.check_running()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"no beat tick ran within {START_TIMEOUT} s; see beat.log")
        time.sleep(0.1)


def stop_celery(processes: CeleryProcesses) -> None:
    """Stop beat first, so it sends no more ticks, then the workers."""
    if processes.beat is not None:
        stop_process(processes.beat, "celery beat", STOP_TIMEOUT)
    for process in processes.all_workers():
        process.terminate()
    for process in processes.all_workers():
        stop_process(process, "celery worker", STOP_TIMEOUT)
    for log in processes.logs:
        log.close()


# Watching the window


@dataclass
class Observations:
    """Readings this process took while beat and the workers ran."""

    dues: dict[int, list[datetime]]
    """Every value of each connector's ``next_run_at``, oldest first."""
    queue_lengths: list[tuple[float, int]] = field(default_factory=list)
    """(seconds after the window start, messages waiting in the scans queue)."""
    poll_seconds: list[float] = field(default_factory=list)
    """How long each read of ``next_run_at`` took."""
    machine_samples: list[tuple[float, float]] = field(default_factory=list)
    """``machine_cpu()`` at the window start and at each minute boundary inside the window."""


@dataclass(frozen=True)
class Run:
    connector_id: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None


def read_due_times(engine: sa.Engine, observations: Observations) -> None:
    from models import Connector

    started = time.perf_counter()
    with engine.connect() as connection:
        rows = connection.execute(sa.select(Connector.id, Connector.next_run_at)).all()
    observations.poll_seconds.append(time.perf_counter() - started)
    for connector_id, due in rows:
        seen = observations.dues.setdefault(connector_id, [])
        if due is not None and (not seen or seen[-1] != due):
            seen.append(due)


def read_runs(engine: sa.Engine) -> list[Run]:
    from models import ConnectorRun

    statement = (
        sa.select(
            ConnectorRun.connector_id,
            ConnectorRun.status,
            ConnectorRun.started_at,
            ConnectorRun.finished_at,
            ConnectorRun.error,
        )
        .where(ConnectorRun.trigger == "schedule")
        .order_by(ConnectorRun.started_at, ConnectorRun.id)
    )
    with engine.connect() as connection:
        return [
            Run(connector_id, status.value, started_at, finished_at, error)
            for connector_id, status, started_at, finished_at, error in connection.execute(
                statement
            )
        ]


def minute_boundaries(window_start: datetime, window_end: datetime) -> list[datetime]:
    """Return the end of each minute of the window; the last one may be shorter."""
    count = math.ceil((window_end - window_start) / INTERVAL)
    return [min(window_start + number * INTERVAL, window_end) for number in range(1, count + 1)]


def watch(
    engine: sa.Engine,
    client: redis.Redis,
    processes: CeleryProcesses,
    observations: Observations,
    window: tuple[datetime, datetime],
    until: datetime,
) -> None:
    """Read due times and the queue length every POLL_SECONDS until ``until``.

    When a minute of the window has passed, it also samples the machine's CPU
    time and logs the queue length.
    """
    window_start, window_end = window
    boundaries = minute_boundaries(window_start, window_end)
    while True:
        now = datetime.now(UTC)
        if now >= until:
            return
        processes.check_running()
        read_due_times(engine, observations)
        queued = int(client.llen(QUEUE_KEY))
        observations.queue_lengths.append(((now - window_start).total_seconds(), queued))
        # The first sample is the window start's, so the next boundary has this index.
        minute = len(observations.machine_samples) - 1
        if 0 <= minute < len(boundaries) and now >= boundaries[minute]:
            observations.machine_samples.append(machine_cpu())
            logger.info("minute %d of the window done, %d messages queued", minute + 1, queued)
        time.sleep(max(0.0, POLL_SECONDS - (datetime.now(UTC) - now).total_seconds()))


def drain(
    engine: sa.Engine,
    client: redis.Redis,
    processes: CeleryProcesses,
    observations: Observations,
    window_start: datetime,
    window_end: datetime,
) -> float:
    """Keep watching until every due time inside the window has a started scan.

    Returns the seconds spent, at most DRAIN_LIMIT.
    """
    started = time.monotonic()
    while time.monotonic() - started < DRAIN_LIMIT:
        counts = Counter(run.connector_id for run in read_runs(engine))
        pending = sum(
            1
            for connector_id, dues in observations.dues.items()
            if sum(1 for due in dues if due < window_end) > counts[connector_id]
        )
        if pending == 0:
            break
        logger.info("waiting for %d due scans to start", pending)
        pause_until = datetime.now(UTC) + timedelta(seconds=2)
        window = (window_start, window_end)
        watch(engine, client, processes, observations, window, pause_until)
    return time.monotonic() - started


# Beat's ticks, counted from the logs


_LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) ")
_TICK_SENT = "Sending due task enqueue-due-connectors"
_TICK_RUN = re.compile(r"Task mailroom\.connectors\.enqueue_due\[[^]]+\] succeeded")
_TICK_DISCARDED = "Discarding revoked task: mailroom.connectors.enqueue_due"


@dataclass(frozen=True)
class TickCounts:
    """Beat's ``enqueue_due`` ticks inside the window, from the beat and worker logs."""

    sent: int
    run: int
    discarded: int
    """Ticks that waited in the queue past their expiry: the tick interval, at least 1 s."""


def _lines_in_window(path: Path, start: datetime, end: datetime) -> Iterator[str]:
    """Yield the lines of ``path`` logged inside [start, end).

    The text log format starts each line with the local time; see logconfig.py.
    """
    with path.open(encoding="utf-8", errors="replace") as log:
        for line in log:
            match = _LOG_TIME.match(line)
            if match is None:
                continue
            logged = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone()
            if start <= logged < end:
                yield line


def count_ticks(log_dir: Path, workers: int, start: datetime, end: datetime) -> TickCounts:
    """Count the ticks in beat's log and in every worker's, where they ran or expired.

    The control worker runs the ticks. The scan workers' logs are read too, so
    that a tick that went to the wrong queue still counts.
    """
    sent = sum(
        1 for line in _lines_in_window(log_dir / "beat.log", start, end) if _TICK_SENT in line
    )
    run = discarded = 0
    logs = [log_dir / f"worker{number}.log" for number in range(1, workers + 1)]
    for path in [*logs, log_dir / "control.log"]:
        for line in _lines_in_window(path, start, end):
            run += bool(_TICK_RUN.search(line))
            discarded += _TICK_DISCARDED in line
    return TickCounts(sent, run, discarded)


# Profiling the workers with py-spy


PROFILE_TOP = 12
"""Functions listed in the profile summary."""


def start_profiles(
    workers: Sequence[subprocess.Popen[bytes]], seconds: float, profile_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """Sample every worker and its pool processes with py-spy for ``seconds``.

    ``--nonblocking`` reads the stacks without pausing the workers, so their
    timing changes little, but py-spy's own CPU use competes with them.
    """
    binary = BIN / "py-spy"
    if not binary.exists():
        raise BenchmarkError(f"{binary} is missing; install it with pip install py-spy")
    profile_dir.mkdir(parents=True, exist_ok=True)
    profilers = []
    for number, worker in enumerate(workers, start=1):
        command = [str(binary), "record", "--pid", str(worker.pid), "--subprocesses"]
        command += ["--duration", str(math.ceil(seconds)), "--rate", "100", "--format", "raw"]
        command += ["--nolineno", "--nonblocking"]
        command += ["--output", str(profile_dir / f"worker{number}.txt")]
        log = (profile_dir / f"py-spy-worker{number}.log").open("wb")
        profilers.append(subprocess.Popen(command, stdout=log, stderr=log))
        log.close()
    return profilers


def summarize_profiles(
    profilers: Sequence[subprocess.Popen[bytes]], profile_dir: Path, seconds: float
) -> list[tuple[str, float]]:
    """Wait for py-spy and return the functions with the most samples at the top of the stack.

    The share is of all samples, which py-spy takes only while a thread is
    not idle, so it approximates the share of the workers' CPU time.
    """
    for profiler in profilers:
        try:
            profiler.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            stop_process(profiler, "py-spy")
    leaves: Counter[str] = Counter()
    for path in sorted(profile_dir.glob("worker*.txt")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            # The first frame names the process; a stack of that alone has no Python frame.
            if len(frames) > 1 and count.isdigit():
                leaves[frames[-1]] += int(count)
    total = sum(leaves.values())
    if total == 0:
        raise BenchmarkError(
            f"py-spy recorded no samples; see the py-spy-worker*.log files in {profile_dir}"
        )
    return [(frame, samples / total) for frame, samples in leaves.most_common(PROFILE_TOP)]


# Analysis


@dataclass(frozen=True)
class MinuteFigures:
    """One minute of the window; the last minute is shorter when --minutes has a fraction."""

    scans: int
    """Scheduled runs that started in this minute."""
    due: int
    """Due times in this minute."""
    delay_p99: float
    """Seconds, for the due times in this minute."""
    max_queue: int
    machine_busy: float | None
    """Share of all cores' time that was not idle, or None without a sample at the minute's end."""


@dataclass
class Report:
    connectors: int
    minutes: float
    workers: int
    concurrency: int
    beat_tick: float
    database: str
    tls: str
    load_average: tuple[float, float, float]
    """1, 5 and 15 minute load averages when the benchmark started."""
    code: str = ""
    """``code_version()`` when the benchmark started."""
    scans_in_window: int = 0
    """Scheduled runs that started inside the window."""
    due_in_window: int = 0
    """Due times inside the window, summed over the connectors."""
    started_for_due: int = 0
    """Due times inside the window whose scan started, before the drain limit."""
    unclaimed: int = 0
    """Due times inside the window that beat had not claimed when the drain ended."""
    unmatched_runs: int = 0
    """Scheduled runs without a claim, or that started before their claim: should be 0."""
    connectors_every_minute: int = 0
    delays: list[float] = field(default_factory=list)
    """Seconds from due time to ``started_at`` per due time in the window; inf if none started."""
    claim_lags: list[float] = field(default_factory=list)
    """Seconds from due time to the claim, for each claimed due time in the window."""
    queue_lags: list[float] = field(default_factory=list)
    """Seconds from the claim to ``started_at``, for each started scan of a window due time."""
    durations: list[float] = field(default_factory=list)
    """Seconds from ``started_at`` to ``finished_at`` of the finished scans in the window."""
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    max_gap: float = 0.0
    """Maximum time in seconds that a connector went without a scan start."""
    max_queue: int = 0
    drain_seconds: float = 0.0
    median_poll_seconds: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    """Share of all cores' time that was not idle during the window, 0 to 1."""
    ticks: TickCounts | None = None
    per_minute: list[MinuteFigures] = field(default_factory=list)
    profile: list[tuple[str, float]] = field(default_factory=list)
    """(function, share of the workers' samples) for the functions on top of the stack."""

    @property
    def scans_per_minute(self) -> float:
        return self.scans_in_window / self.minutes

    @property
    def failures(self) -> int:
        return self.statuses["failed"]

    @property
    def every_minute_passed(self) -> bool:
        return self.connectors_every_minute == self.connectors

    @property
    def delay_p99(self) -> float:
        return percentile(self.delays, 99)

    @property
    def delay_passed(self) -> bool:
        return bool(self.delays) and self.delay_p99 < DELAY_TARGET


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def analyse(
    report: Report,
    observations: Observations,
    runs: list[Run],
    window_start: datetime,
    window_end: datetime,
) -> None:
    """Pair each connector's runs with its due times in order and fill in ``report``."""
    delays_by_due: list[tuple[datetime, float]] = []
    runs_by_connector: dict[int, list[Run]] = {}
    for run in runs:
        runs_by_connector.setdefault(run.connector_id, []).append(run)

    for connector_id, dues in observations.dues.items():
        connector_runs = runs_by_connector.get(connector_id, [])
        # The value after a due time was written by the claim of that due time.
        claims = [later - INTERVAL for later in dues[1:]]
        report.unmatched_runs += max(0, len(connector_runs) - len(claims))
        for index, due in enumerate(dues):
            if not window_start <= due < window_end:
                continue
            report.due_in_window += 1
            if index >= len(claims):
                report.unclaimed += 1
                report.delays.append(math.inf)
                delays_by_due.append((due, math.inf))
                continue
            report.claim_lags.append(_seconds(claims[index], due))
            if index >= len(connector_runs):
                report.delays.append(math.inf)
                delays_by_due.append((due, math.inf))
                continue
            run = connector_runs[index]
            if run.started_at < claims[index]:
                report.unmatched_runs += 1
            report.started_for_due += 1
            report.delays.append(_seconds(run.started_at, due))
            delays_by_due.append((due, report.delays[-1]))
            report.queue_lags.append(_seconds(run.started_at, claims[index]))

        starts = [
            run.started_at for run in connector_runs if window_start <= run.started_at < window_end
        ]
        moments = [window_start, *starts, window_end]
        gap = max(_seconds(later, earlier) for earlier, later in pairwise(moments))
        report.max_gap = max(report.max_gap, gap)
        if gap <= GAP_LIMIT:
            report.connectors_every_minute += 1

    for run in runs:
        if not window_start <= run.started_at < window_end:
            continue
        report.scans_in_window += 1
        report.statuses[run.status] += 1
        if run.finished_at is not None:
            report.durations.append(_seconds(run.finished_at, run.started_at))
        if run.error:
            report.errors[run.error[:200]] += 1

    report.max_queue = max((length for _, length in observations.queue_lengths), default=0)
    report.per_minute = per_minute(observations, runs, delays_by_due, window_start, window_end)
    if observations.poll_seconds:
        report.median_poll_seconds = statistics.median(observations.poll_seconds)


def per_minute(
    observations: Observations,
    runs: list[Run],
    delays_by_due: list[tuple[datetime, float]],
    window_start: datetime,
    window_end: datetime,
) -> list[MinuteFigures]:
    """Split the window's figures by minute, so that a slow minute is visible."""
    minutes = []
    samples = observations.machine_samples
    begin = window_start
    for number, end in enumerate(minute_boundaries(window_start, window_end)):
        delays = [delay for due, delay in delays_by_due if begin <= due < end]
        offsets = (_seconds(begin, window_start), _seconds(end, window_start))
        queue = [
            length for at, length in observations.queue_lengths if offsets[0] <= at < offsets[1]
        ]
        busy = None
        if number + 1 < len(samples):
            (busy_before, total_before), (busy_after, total_after) = samples[number : number + 2]
            busy = (busy_after - busy_before) / (total_after - total_before)
        minutes.append(
            MinuteFigures(
                scans=sum(1 for run in runs if begin <= run.started_at < end),
                due=len(delays),
                delay_p99=percentile(delays, 99),
                max_queue=max(queue, default=0),
                machine_busy=busy,
            )
        )
        begin = end
    return minutes


# Output


def _ms(values: Sequence[float], percent: float) -> str:
    value = percentile(values, percent)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "never started"
    return f"{value * 1000:.0f} ms"


def format_report(report: Report) -> str:
    load = ", ".join(f"{value:.2f}" for value in report.load_average)
    per_connector = report.scans_per_minute / report.connectors
    share = report.connectors_every_minute / report.connectors
    lines = [
        f"Connector scale: {report.connectors} connectors due every minute, "
        f"{report.workers} scan worker process(es) x concurrency {report.concurrency} "
        f"and one control worker x concurrency {CONTROL_CONCURRENCY}, "
        f"beat tick {report.beat_tick:g} s, database {report.database}, IMAP {report.tls}, "
        f"window {report.minutes:g} min, load average before the run {load}, "
        f"commit {report.code}",
        f"scans started in the window: {report.scans_in_window} "
        f"({report.scans_per_minute:.1f}/min in total, {per_connector:.3f}/min per connector)",
        f"scan statuses: {dict(sorted(report.statuses.items()))}; failures: {report.failures}",
        f"due times in the window: {report.due_in_window}, scans started for them: "
        f"{report.started_for_due}, not claimed by beat: {report.unclaimed}, "
        f"runs without a matching claim: {report.unmatched_runs}",
        f"start delay (due time to started_at): median {_ms(report.delays, 50)}, "
        f"p99 {_ms(report.delays, 99)}, max {_ms(report.delays, 100)}",
        f"  due time to claim (beat): median {_ms(report.claim_lags, 50)}, "
        f"p99 {_ms(report.claim_lags, 99)}",
        f"  claim to started_at (queue and worker): median {_ms(report.queue_lags, 50)}, "
        f"p99 {_ms(report.queue_lags, 99)}",
        f"scan duration (started_at to finished_at): median {_ms(report.durations, 50)}, "
        f"p99 {_ms(report.durations, 99)}",
        f"longest time without a scan start: {report.max_gap:.1f} s; "
        f"most messages waiting in the queue: {report.max_queue}; "
        f"waited {report.drain_seconds:.0f} s after the window for late scans; "
        f"each read of next_run_at took {report.median_poll_seconds * 1000:.1f} ms (median)",
    ]
    for number, minute in enumerate(report.per_minute, start=1):
        busy = f"{minute.machine_busy:.0%}" if minute.machine_busy is not None else "n/a"
        lines.append(
            f"  minute {number}: {minute.scans} scans started, {minute.due} due, "
            f"delay p99 {_ms([minute.delay_p99], 100)}, at most {minute.max_queue} queued, "
            f"machine busy {busy}"
        )
    if report.cpu_seconds:
        window = report.minutes * 60
        parts = ", ".join(
            f"{name} {seconds:.1f} s ({seconds / window:.0%} of one core)"
            for name, seconds in report.cpu_seconds.items()
        )
        lines.append(f"CPU in the window: machine busy {report.machine_busy:.0%}; {parts}")
        workers = report.cpu_seconds.get("Celery workers", 0.0)
        if report.scans_in_window:
            per_scan = workers / report.scans_in_window * 1000
            lines.append(f"worker CPU per scan, beat's ticks included: {per_scan:.1f} ms")
    if report.ticks is not None:
        ticks = report.ticks
        lines.append(
            f"beat ticks in the window: {ticks.sent} sent, {ticks.run} run, "
            f"{ticks.discarded} discarded after waiting in the queue past their expiry"
        )
    if report.profile:
        lines.append("py-spy, functions on top of the workers' stacks (share of samples):")
        lines += [f"  {share:6.1%}  {frame}" for frame, share in report.profile]
    for error, count in report.errors.most_common(3):
        lines.append(f"error ({count} runs): {error}")

    verdict = "PASS" if report.every_minute_passed else "FAIL"
    lines.append(
        f"{verdict} every connector scanned every minute: {report.connectors_every_minute} of "
        f"{report.connectors} ({share:.1%}) never went more than {GAP_LIMIT:g} s without a scan"
    )
    verdict = "PASS" if report.delay_passed else "FAIL"
    lines.append(
        f"{verdict} start delay: p99 {_ms(report.delays, 99)}, target under "
        f"{DELAY_TARGET * 1000:.0f} ms"
    )
    return "\n".join(lines)


# One measured window


def measure_window(
    engine: sa.Engine,
    client: redis.Redis,
    processes: CeleryProcesses,
    cpu_groups: dict[str, list[int]],
    args: argparse.Namespace,
    report: Report,
    log_dir: Path,
    stack: ExitStack,
) -> None:
    """Write the first due times, watch the window and the drain, stop Celery, fill ``report``."""
    window_start = datetime.now(UTC) + timedelta(seconds=DUE_LEAD_SECONDS)
    window_end = window_start + timedelta(minutes=args.minutes)
    window = (window_start, window_end)
    first_dues = schedule_connectors(engine, window_start)
    observations = Observations(dues={key: [value] for key, value in first_dues.items()})
    logger.info("window of %g min starts at %s", args.minutes, window_start)

    watch(engine, client, processes, observations, window, window_start)
    cpu_before = sample_cpu(cpu_groups)
    observations.machine_samples.append((cpu_before.machine_busy, cpu_before.machine_total))
    profilers = []
    if args.profile_dir:
        profilers = start_profiles(processes.all_workers(), args.minutes * 60, args.profile_dir)
        for profiler in profilers:
            stack.callback(stop_process, profiler, "py-spy")
    watch(engine, client, processes, observations, window, window_end)
    cpu_after = sample_cpu(cpu_groups)
    if len(observations.machine_samples) <= len(minute_boundaries(window_start, window_end)):
        observations.machine_samples.append((cpu_after.machine_busy, cpu_after.machine_total))
    if args.profile_dir:
        report.profile = summarize_profiles(profilers, args.profile_dir, args.minutes * 60)
    report.drain_seconds = drain(engine, client, processes, observations, window_start, window_end)
    stop_celery(processes)
    # A claim in the last moments before the stop may have escaped the last read.
    read_due_times(engine, observations)

    busy = cpu_after.machine_busy - cpu_before.machine_busy
    report.cpu_seconds = {
        name: cpu_after.groups[name] - cpu_before.groups.get(name, 0.0) for name in cpu_after.groups
    }
    report.cpu_seconds["everything else on the machine"] = other_cpu(busy, report.cpu_seconds)
    report.machine_busy = busy / (cpu_after.machine_total - cpu_before.machine_total)
    analyse(report, observations, read_runs(engine), window_start, window_end)
    report.ticks = count_ticks(log_dir, args.workers, window_start, window_end)


# Command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.connector_scale",
        description=(
            "Run Celery beat and workers against N password connectors that each scan an "
            "empty Dovecot folder every minute, and measure how late the scans start. "
            "Prints PASS or FAIL per target and exits 0 either way; a nonzero exit means "
            "the benchmark itself failed."
        ),
    )
    parser.add_argument(
        "--connectors", type=_positive_int, default=1000, help="active connectors (default 1000)"
    )
    parser.add_argument(
        "--minutes",
        type=_positive_float,
        default=5.0,
        help="length of the measured window in minutes, fractions allowed (default 5)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        help="Celery worker processes for the scans queue, each started with its own "
        "`celery worker`; one control worker for beat's ticks comes in addition (default 2)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        help="pool processes per worker, Celery's --concurrency (default 1)",
    )
    parser.add_argument(
        "--beat-tick",
        type=_positive_float,
        default=1.0,
        help="BEAT_TICK_SECONDS: seconds between beat's looks for due connectors (default 1)",
    )
    parser.add_argument(
        "--starttls",
        action="store_true",
        help="connect to Dovecot's IMAP port with STARTTLS (default: implicit TLS on IMAPS)",
    )
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of an empty database to use and keep, PostgreSQL or "
        "sqlite:///PATH (default: create a database on --postgres-url and drop it afterwards)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"PostgreSQL server to create the database on (default {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="sample the workers with py-spy during the window, write the raw stacks to this "
        "directory and print the functions with the most samples (needs ptrace permission)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="keep the logs of the workers and beat in this directory "
        "(default: a temporary directory that is removed)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> Report:
    """Run the benchmark, print its figures and PASS/FAIL lines, and return the figures.

    Raises BenchmarkError when a server or a Celery process fails.
    """
    args = build_parser().parse_args(argv)
    if args.workers * args.concurrency > DOVECOT_CONNECTIONS_PER_USER:
        raise BenchmarkError(
            f"{args.workers * args.concurrency} concurrent scans exceed the "
            f"{DOVECOT_CONNECTIONS_PER_USER} IMAP sessions that Dovecot allows per user and IP"
        )
    load_average = os.getloadavg()

    from cryptography.fernet import Fernet

    from devservers.dovecot import Dovecot

    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="mailroom-scale-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        log_dir = args.log_dir or workdir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)

        redis_url, redis_process = stack.enter_context(private_redis(workdir))
        password = secrets.token_urlsafe(16)
        dovecot = stack.enter_context(
            Dovecot(
                workdir / "dovecot",
                introspection_url=None,
                password_users={MAILBOX_USER: password},
            )
        )
        port = dovecot.imap_port if args.starttls else dovecot.imaps_port
        mailbox = Mailbox(dovecot.host, port, not args.starttls, password)
        create_folders(dovecot, [folder_name(n) for n in range(1, args.connectors + 1)])

        database_url = args.database_url or stack.enter_context(
            postgres_database(args.postgres_url, "mailroom_scale")
        )
        encryption_key = Fernet.generate_key().decode()
        prepare_database(database_url, encryption_key, args.connectors, mailbox)
        engine = sa.create_engine(database_url)
        stack.callback(engine.dispose)
        client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        stack.callback(client.close)

        env = celery_environment(
            database_url, redis_url, encryption_key, workdir, dovecot.ca_file, args.beat_tick
        )
        processes = CeleryProcesses()
        stack.callback(stop_celery, processes)
        start_workers(processes, args.workers, args.concurrency, env, log_dir)
        wait_for_workers(redis_url, args.workers + 1, processes)
        start_beat(processes, env, workdir, log_dir)
        wait_for_tick(client, processes)

        report = Report(
            connectors=args.connectors,
            minutes=args.minutes,
            workers=args.workers,
            concurrency=args.concurrency,
            beat_tick=args.beat_tick,
            database=engine.dialect.name,
            tls="STARTTLS" if args.starttls else "implicit TLS",
            load_average=load_average,
            code=code_version(),
        )
        cpu_groups = {
            "Celery workers": [process.pid for process in processes.all_workers()],
            "Celery beat": [processes.beat.pid] if processes.beat else [],
            "Dovecot": [int((dovecot.base_dir / "master.pid").read_text().strip())],
            "Redis": [redis_process.pid],
        }
        measure_window(engine, client, processes, cpu_groups, args, report, log_dir, stack)
    print(format_report(report))
    return report


def _cli() -> int:
    # Only this module logs progress, so the servers and Alembic stay at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    try:
        main()
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
