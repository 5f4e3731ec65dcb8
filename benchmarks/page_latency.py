"""Page latency: the dashboard, the connector list and the job list under concurrent load.

The benchmark fills a database with N connectors (a few runs each) and M
projects and quotes (one file each). It serves Mailroom with gunicorn on
127.0.0.1, logs in as an admin, and requests each page from many client
threads at once. It prints the median and 99th percentile latency and the
request rate per page.

Each page then gets one more request in a separate process through Flask's
test client, with SQLAlchemy event hooks that count the SQL statements and
time them, so a slow page shows where its time goes.

Run ``python -m benchmarks.page_latency --help`` from the repository root.
The servers and helpers come from ``benchmarks.connector_scale``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import multiprocessing
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import sqlalchemy as sa

from benchmarks.connector_scale import (
    BIN,
    DEFAULT_POSTGRES_URL,
    ROOT,
    BenchmarkError,
    code_version,
    free_port,
    other_cpu,
    percentile,
    postgres_database,
    private_redis,
    sample_cpu,
    stop_process,
)

if TYPE_CHECKING:
    from models import Base

logger = logging.getLogger("benchmarks.page_latency")

ADMIN_EMAIL = "benchmark-admin@example.com"
LATENCY_TARGET = 0.050
"""Seconds: the 99th percentile latency of every page must stay under this."""
REQUEST_TIMEOUT = 30.0
"""Seconds for each HTTP request to gunicorn."""
PAGE_TIME_LIMIT = 600.0
"""Seconds after which the clients stop requesting a page even if requests are left."""
START_TIMEOUT = 60.0
"""Seconds to wait until gunicorn responds."""
CHUNK_ROWS = 5000
"""Rows per executemany when the database is filled."""
RUNS_PER_CONNECTOR = 3
WARMUP_PER_CLIENT = 2
"""Requests each client sends to a page before the measured ones, which are not counted."""
SOLO_REQUESTS = 50
"""Requests per page from a single client, for the latency without queueing."""
SLOWEST_SQL_CHARS = 160


class LoginFailed(BenchmarkError):
    """The admin could not log in, so every page would be the login page."""


# Filling the database


@dataclass(frozen=True)
class Dataset:
    connectors: int
    jobs: int
    projects: int
    quotes: int
    admin_id: int


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _insert(
    connection: sa.Connection, table: type[Base] | sa.Table, rows: Iterator[dict[str, Any]]
) -> int:
    """Insert ``rows`` with one executemany per CHUNK_ROWS rows and return the count."""
    count = 0
    for chunk in _chunks(rows, CHUNK_ROWS):
        connection.execute(sa.insert(table), chunk)
        count += len(chunk)
    return count


def _is_quote(job_id: int) -> bool:
    """Return whether job ``job_id`` is a quote: every fourth is, so projects fill more pages."""
    return job_id % 4 == 0


def fill_database(
    database_url: str, connectors: int, jobs: int, admin_password: str, now: datetime
) -> Dataset:
    """Migrate, seed reference data, add the admin, and bulk insert the rows.

    Rows get explicit ids, so one executemany per chunk needs no RETURNING.
    PostgreSQL's sequences are moved past those ids afterwards, and ANALYZE
    gives the planner the statistics that a database in use would have.
    """
    import migrations
    from database import Database
    from models import (
        AfterProcessing,
        Aggregation,
        AuthMethod,
        Client,
        Connector,
        ConnectorRun,
        Job,
        JobFile,
        JobKind,
        Language,
        RunStatus,
        SourceLocation,
        User,
        job_target_languages,
    )
    from referencedata import seed
    from web.security import hash_password

    migrations.upgrade(database_url)
    db = Database(database_url)
    try:
        with db.session() as session:
            seed(session)
            admin = User(
                email=ADMIN_EMAIL,
                name="Benchmark Admin",
                is_admin=True,
                password_hash=hash_password(admin_password),
            )
            session.add(admin)
            session.commit()
            admin_id = admin.id
            clients = list(session.scalars(sa.select(Client.id).order_by(Client.id)))
            languages = list(session.scalars(sa.select(Language.id).order_by(Language.id)))
        # Source languages come from the first 3 languages, targets from the next 6.
        if not clients or len(languages) < 9:
            raise BenchmarkError("the reference data lacks clients or languages")

        def connector_rows() -> Iterator[dict[str, Any]]:
            for number in range(1, connectors + 1):
                yield {
                    "id": number,
                    "name": f"Benchmark connector {number:05d}",
                    "job_kind": JobKind.QUOTE if number % 5 == 0 else JobKind.PROJECT,
                    "active": number % 10 != 0,
                    "client_id": clients[number % len(clients)],
                    "aggregation": Aggregation.SEPARATELY,
                    "auth_method": AuthMethod.PASSWORD,
                    "host": "imap.example.com",
                    "port": 993,
                    "use_ssl": True,
                    "username": f"intake{number}@example.com",
                    "folder": "INBOX",
                    "source_location": SourceLocation.EMAIL,
                    "ftp_tls": False,
                    "after_processing": AfterProcessing.DELETE,
                    "rules": {},
                    "options": {},
                    "notifications": {},
                    "interval_minutes": 5,
                    "next_run_at": now + timedelta(seconds=number % 300),
                    "last_run_at": now - timedelta(minutes=5),
                    "created_at": now - timedelta(days=30),
                }

        def run_rows() -> Iterator[dict[str, Any]]:
            run_id = 0
            for number in range(1, connectors + 1):
                for age in range(RUNS_PER_CONNECTOR, 0, -1):
                    run_id += 1
                    failed = run_id % 7 == 0
                    started = now - timedelta(minutes=5 * age, seconds=number % 60)
                    yield {
                        "id": run_id,
                        "connector_id": number,
                        "trigger": "schedule",
                        "status": RunStatus.FAILED if failed else RunStatus.SUCCEEDED,
                        "started_at": started,
                        "finished_at": started + timedelta(seconds=2),
                        "messages_seen": 0 if failed else 2,
                        "jobs_created": 0 if failed else 2,
                        "messages_deleted": 0 if failed else 2,
                        "messages_skipped": 0,
                        "error": "imap.example.com rejected the password" if failed else None,
                    }

        def job_rows() -> Iterator[dict[str, Any]]:
            for job_id in range(1, jobs + 1):
                created = now - timedelta(minutes=5 * (jobs - job_id))
                yield {
                    "id": job_id,
                    "kind": JobKind.QUOTE if _is_quote(job_id) else JobKind.PROJECT,
                    "name": f"Contract translation {job_id}",
                    "client_id": clients[job_id % len(clients)],
                    "budget_code": None,
                    "connector_id": job_id % connectors + 1 if connectors else None,
                    "source_language_id": languages[job_id % 3],
                    "source_sender": f"client{job_id % 500}@example.org",
                    "source_subject": f"Please translate document {job_id}",
                    "source_date": created - timedelta(minutes=1),
                    "source_message_id": f"<benchmark-{job_id}@example.org>",
                    "created_at": created,
                }

        def target_rows() -> Iterator[dict[str, Any]]:
            for job_id in range(1, jobs + 1):
                yield {"job_id": job_id, "language_id": languages[(job_id + 1) % 3 + 3]}
                if job_id % 3 == 0:
                    yield {"job_id": job_id, "language_id": languages[(job_id + 2) % 3 + 6]}

        def file_rows() -> Iterator[dict[str, Any]]:
            for job_id in range(1, jobs + 1):
                digest = hashlib.sha256(job_id.to_bytes(8, "big")).hexdigest()
                yield {
                    "id": job_id,
                    "job_id": job_id,
                    "original_name": f"document-{job_id}.docx",
                    "storage_name": digest[:32],
                    "content_type": "application/vnd.openxmlformats-officedocument"
                    ".wordprocessingml.document",
                    "size": 20_000 + job_id % 50_000,
                    "sha256": digest,
                }

        started = time.perf_counter()
        with db.engine.begin() as connection:
            counts = {
                "connectors": _insert(connection, Connector, connector_rows()),
                "connector runs": _insert(connection, ConnectorRun, run_rows()),
                "jobs": _insert(connection, Job, job_rows()),
                "target languages": _insert(connection, job_target_languages, target_rows()),
                "job files": _insert(connection, JobFile, file_rows()),
            }
            if connection.dialect.name == "postgresql":
                for table in (Connector, ConnectorRun, Job, JobFile):
                    table_name = table.__tablename__
                    last_id = sa.select(sa.func.max(table.id)).scalar_subquery()
                    sequence = sa.func.pg_get_serial_sequence(table_name, "id")
                    connection.execute(sa.select(sa.func.setval(sequence, last_id)))
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(sa.text("ANALYZE"))
        else:
            with db.engine.begin() as connection:
                connection.execute(sa.text("ANALYZE"))
        logger.info("inserted %s in %.1f s", counts, time.perf_counter() - started)
    finally:
        db.dispose()

    quotes = jobs // 4
    return Dataset(connectors, jobs, jobs - quotes, quotes, admin_id)


# gunicorn and the logged-in clients


def app_environment(database_url: str, redis_url: str, workdir: Path) -> dict[str, str]:
    """Return the environment that load_settings reads in gunicorn's workers."""
    from cryptography.fernet import Fernet

    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(32),
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "FILES_ROOT": str(workdir / "files"),
        "LOG_FORMAT": "text",
    }


def start_gunicorn(
    env: dict[str, str], port: int, workers: int, threads: int, log_path: Path
) -> subprocess.Popen[bytes]:
    command = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--threads", str(threads), "wsgi:app"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise BenchmarkError(
                f"gunicorn exited with status {process.returncode}; see {log_path}"
            )
        try:
            if requests.get(f"{url}/login", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass  # Refused until gunicorn listens, or slow while its workers boot.
        if time.monotonic() > deadline:
            stop_process(process, "gunicorn")
            raise BenchmarkError(f"gunicorn did not respond on {url} within {START_TIMEOUT} s")
        time.sleep(0.2)
    logger.info("gunicorn pid %d serves %s with %d x %d", process.pid, url, workers, threads)
    return process


_CSRF_FIELD = re.compile(
    r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"'
)


def log_in(url: str, password: str) -> requests.cookies.RequestsCookieJar:
    """Log in through the login form and return the session cookies."""
    with requests.Session() as session:
        page = session.get(f"{url}/login", timeout=REQUEST_TIMEOUT)
        match = _CSRF_FIELD.search(page.text)
        if match is None:
            raise LoginFailed("the login page has no csrf_token field")
        form = {
            "csrf_token": match.group(1) or match.group(2),
            "email": ADMIN_EMAIL,
            "password": password,
        }
        answer = session.post(
            f"{url}/login", data=form, allow_redirects=False, timeout=REQUEST_TIMEOUT
        )
        if answer.status_code != 302:
            raise LoginFailed(f"POST /login returned {answer.status_code}, expected a redirect")
        return session.cookies


# Measuring


@dataclass(frozen=True)
class Page:
    label: str
    path: str
    marker: str
    """Text the page must contain, so a login page or an error page is not measured."""
    floor: bool = False
    """A request far cheaper than any page, measured under the same load for comparison."""


@dataclass
class PageResult:
    page: Page
    latencies: list[float] = field(default_factory=list)
    """Seconds per measured request with status 200."""
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of the measured requests from all clients."""
    solo_latencies: list[float] = field(default_factory=list)
    """Seconds per request when a single client sends one request after the other."""
    sql: PageQueries | None = None
    cpu_cores: dict[str, float] = field(default_factory=dict)
    """Cores busy on average while the clients ran, per group of processes."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    @property
    def passed(self) -> bool:
        return not self.errors and bool(self.latencies) and self.p99 < LATENCY_TARGET


def check_page(url: str, cookies: requests.cookies.RequestsCookieJar, page: Page) -> None:
    answer = requests.get(
        url + page.path, cookies=cookies, allow_redirects=False, timeout=REQUEST_TIMEOUT
    )
    if answer.status_code != 200 or page.marker not in answer.text:
        raise BenchmarkError(
            f"GET {page.path} returned {answer.status_code} without {page.marker!r}"
        )


def _client(
    url: str,
    cookies: requests.cookies.RequestsCookieJar,
    page: Page,
    tickets: Iterator[int],
    lock: threading.Lock,
    deadline: float,
    result: PageResult | None,
) -> None:
    """Request ``page`` once per ticket until the tickets or the time run out."""
    with requests.Session() as session:
        session.cookies.update(cookies)
        while time.monotonic() < deadline:
            with lock:
                ticket = next(tickets, None)
            if ticket is None:
                return
            started = time.perf_counter()
            try:
                answer = session.get(
                    url + page.path, allow_redirects=False, timeout=REQUEST_TIMEOUT
                )
                latency = time.perf_counter() - started
                error = None if answer.status_code == 200 else f"status {answer.status_code}"
            except requests.RequestException as exc:
                latency = time.perf_counter() - started
                error = f"{type(exc).__name__}: {exc}"
            if result is None:
                continue
            with lock:
                if error is None:
                    result.latencies.append(latency)
                else:
                    result.errors.append(error)


def load_page(
    url: str,
    cookies: requests.cookies.RequestsCookieJar,
    page: Page,
    clients: int,
    count: int,
    result: PageResult | None,
) -> float:
    """Send ``count`` requests for ``page`` from ``clients`` threads; return the wall time."""
    tickets = iter(range(count))
    lock = threading.Lock()
    deadline = time.monotonic() + PAGE_TIME_LIMIT
    threads = [
        threading.Thread(target=_client, args=(url, cookies, page, tickets, lock, deadline, result))
        for _ in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def measure_page(
    url: str,
    cookies: requests.cookies.RequestsCookieJar,
    page: Page,
    clients: int,
    count: int,
    gunicorn_pid: int,
) -> PageResult:
    """Check the page, time one client alone, warm up, then time ``clients`` together."""
    check_page(url, cookies, page)
    result = PageResult(page)
    solo = PageResult(page)
    load_page(url, cookies, page, 1, min(SOLO_REQUESTS, count), solo)
    result.solo_latencies = solo.latencies
    load_page(url, cookies, page, clients, clients * WARMUP_PER_CLIENT, None)
    groups = {"gunicorn": [gunicorn_pid]}
    before = sample_cpu(groups)
    result.seconds = load_page(url, cookies, page, clients, count, result)
    after = sample_cpu(groups)
    result.cpu_cores = {
        name: (after.groups[name] - before.groups[name]) / result.seconds for name in after.groups
    }
    busy = (after.machine_busy - before.machine_busy) / result.seconds
    result.cpu_cores["everything else on the machine"] = other_cpu(busy, result.cpu_cores)
    logger.info(
        "%s: %d requests in %.1f s, p99 %.1f ms",
        page.path,
        len(result.latencies),
        result.seconds,
        result.p99 * 1000,
    )
    return result


# SQL per page, in a separate process


@dataclass(frozen=True)
class PageQueries:
    statements: int
    sql_seconds: float
    request_seconds: float
    slowest_seconds: float
    slowest_statement: str


def count_queries(
    database_url: str, redis_url: str, files_root: str, admin_id: int, paths: list[str]
) -> list[PageQueries]:
    """Request each path once through Flask's test client and time its SQL statements.

    The first request of each path warms SQLAlchemy's statement cache and
    Jinja's templates, and the second is measured, as in a long-running worker.
    """
    from cryptography.fernet import Fernet

    from config import Settings
    from web import create_app

    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key=secrets.token_urlsafe(32),
        encryption_keys=(Fernet.generate_key().decode(),),
        files_root=Path(files_root),
    )
    # create_app sets the root logger to INFO, and the output should hold only the figures.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    app = create_app(settings)
    logging.getLogger().setLevel(logging.WARNING)
    engine = app.extensions["mailroom"].db.engine
    timings: list[tuple[float, str]] = []
    started_at: list[float] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(*_args: object) -> None:
        started_at.append(time.perf_counter())

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(_connection: object, _cursor: object, statement: str, *_args: object) -> None:
        timings.append((time.perf_counter() - started_at.pop(), statement))

    results = []
    with app.test_client() as client:
        with client.session_transaction() as session:
            session["_user_id"] = str(admin_id)
            session["_fresh"] = True
        for path in paths:
            client.get(path)
            timings.clear()
            started = time.perf_counter()
            answer = client.get(path)
            request_seconds = time.perf_counter() - started
            if answer.status_code != 200:
                raise BenchmarkError(f"the test client got {answer.status_code} for {path}")
            slowest_seconds, slowest = max(timings, default=(0.0, ""))
            results.append(
                PageQueries(
                    statements=len(timings),
                    sql_seconds=sum(seconds for seconds, _ in timings),
                    request_seconds=request_seconds,
                    slowest_seconds=slowest_seconds,
                    slowest_statement=" ".join(slowest.split())[:SLOWEST_SQL_CHARS],
                )
            )
    app.extensions["mailroom"].db.dispose()
    return results


def in_child_process(function: Any, *args: Any) -> Any:
    """Call ``function`` in a spawned process, so Mailroom's logging setup stays out of this one."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


# Output


@dataclass
class Report:
    dataset: Dataset
    gunicorn_workers: int
    gunicorn_threads: int
    clients: int
    requests: int
    database: str
    load_average: tuple[float, float, float]
    code: str
    """``code_version()`` when the benchmark started."""
    pages: list[PageResult] = field(default_factory=list)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


_COLUMNS = ("page", "alone", "median", "p99", "max", "req/s", "errors", "SQL", "SQL ms", "view ms")
_WIDTHS = (62, 7, 7, 7, 7, 7, 6, 4, 7, 7)


def _table_row(cells: Sequence[str]) -> str:
    """Left-align the page column and right-align the figures."""
    first = cells[0].ljust(_WIDTHS[0])
    rest = (cell.rjust(width) for cell, width in zip(cells[1:], _WIDTHS[1:], strict=True))
    return "  ".join([first, *rest])


def format_report(report: Report) -> str:
    data = report.dataset
    load = ", ".join(f"{value:.2f}" for value in report.load_average)
    lines = [
        f"Page latency: {data.connectors} connectors with {RUNS_PER_CONNECTOR} runs each, "
        f"{data.jobs} jobs ({data.projects} projects, {data.quotes} quotes, one file each), "
        f"gunicorn {report.gunicorn_workers} workers x {report.gunicorn_threads} threads, "
        f"{report.clients} clients, {report.requests} requests per page, "
        f"database {report.database}, load average before the run {load}, commit {report.code}",
        "latency in ms; 'alone' is the median of one client that sends one request after "
        "the other; "
        "SQL, SQL ms and view ms are the statements, their time and the whole request "
        "of one request through Flask's test client",
    ]
    lines.append(_table_row(_COLUMNS))
    for result in report.pages:
        sql = result.sql
        cells = (
            f"{result.page.label} {result.page.path}",
            _ms(statistics.median(result.solo_latencies)) if result.solo_latencies else "n/a",
            _ms(statistics.median(result.latencies)) if result.latencies else "n/a",
            _ms(result.p99) if result.latencies else "n/a",
            _ms(max(result.latencies)) if result.latencies else "n/a",
            f"{result.rate:.0f}",
            str(len(result.errors)),
            str(sql.statements) if sql else "",
            _ms(sql.sql_seconds) if sql else "",
            _ms(sql.request_seconds) if sql else "",
        )
        lines.append(_table_row(cells))
    for result in report.pages:
        if result.cpu_cores:
            cores = ", ".join(f"{name} {value:.2f}" for name, value in result.cpu_cores.items())
            lines.append(f"cores busy during {result.page.path}: {cores}")
    for result in report.pages:
        if result.sql and result.sql.slowest_statement:
            lines.append(
                f"slowest SQL of {result.page.path}: {_ms(result.sql.slowest_seconds)} ms, "
                f"{result.sql.slowest_statement}"
            )
        for error in sorted(set(result.errors))[:3]:
            lines.append(f"error on {result.page.path}: {error}")
    for result in report.pages:
        if result.page.floor:
            lines.append(
                f"floor {result.page.path}: p99 {_ms(result.p99) if result.latencies else 'n/a'}"
                " ms; no page can be faster than this request under the same load"
            )
            continue
        verdict = "PASS" if result.passed else "FAIL"
        p99 = f"{_ms(result.p99)} ms" if result.latencies else "n/a"
        lines.append(
            f"{verdict} {result.page.label} {result.page.path}: p99 {p99}, "
            f"{len(result.errors)} errors, target under {LATENCY_TARGET * 1000:.0f} ms"
        )
    return "\n".join(lines)


# Command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.page_latency",
        description=(
            "Fill a database with connectors, runs, projects and quotes, serve Mailroom with "
            "gunicorn on 127.0.0.1, and measure the latency of the dashboard, the connector "
            "list and the job list under concurrent logged-in clients. Prints PASS or FAIL "
            "per page and exits 0 either way; a nonzero exit means the benchmark failed."
        ),
    )
    parser.add_argument(
        "--connectors", type=_positive_int, default=1000, help="connectors (default 1000)"
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=100_000,
        help="projects and quotes together, every fourth a quote (default 100000)",
    )
    parser.add_argument(
        "--clients",
        type=_positive_int,
        default=32,
        help="client threads that request a page at the same time (default 32)",
    )
    parser.add_argument(
        "--requests",
        type=_positive_int,
        default=2000,
        help="measured requests per page, from all clients together (default 2000)",
    )
    parser.add_argument(
        "--deep-page",
        type=_positive_int,
        default=1000,
        help="which page of 50 projects the deep job list request shows, reached by the "
        "cursor an Older link would carry; capped at the last page (default 1000)",
    )
    parser.add_argument(
        "--gunicorn-workers", type=_positive_int, default=2, help="gunicorn --workers (default 2)"
    )
    parser.add_argument(
        "--gunicorn-threads", type=_positive_int, default=8, help="gunicorn --threads (default 8)"
    )
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of an empty database to fill and keep "
        "(default: create a database on --postgres-url and drop it afterwards)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"PostgreSQL server to create the database on (default {DEFAULT_POSTGRES_URL})",
    )
    return parser


def deep_page_cursor(database_url: str, projects: int, deep_page: int) -> int:
    """Return the id an "Older" link carries to reach page ``deep_page`` of the projects."""
    from models import Job, JobKind
    from web.jobs import JOBS_PER_PAGE

    last_page = max(1, -(-projects // JOBS_PER_PAGE))
    shown_before = (min(deep_page, last_page) - 1) * JOBS_PER_PAGE
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            cursor = connection.scalar(
                sa.select(Job.id)
                .where(Job.kind == JobKind.PROJECT)
                .order_by(Job.created_at.desc(), Job.id.desc())
                .offset(max(0, shown_before - 1))
                .limit(1)
            )
    finally:
        engine.dispose()
    if cursor is None:
        raise BenchmarkError("no project found in the database; fill it with --jobs 4 or more")
    return int(cursor)


def pages_to_measure(deep_cursor: int) -> list[Page]:
    return [
        Page("dashboard", "/", "Dashboard"),
        Page("connector list", "/configuration/integration/smart-connectors", "Smart Connectors"),
        Page("job list, first page", "/projects", "Projects"),
        Page("job list, deep page", f"/projects?before={deep_cursor}", "Projects"),
        # The client search behind the form's search-as-you-type: logged in,
        # one small query, a few hundred bytes of JSON.
        Page("floor: client search", "/api/clients?q=a", '"name"', floor=True),
    ]


def main(argv: Sequence[str] | None = None) -> Report:
    """Run the benchmark, print its table and PASS/FAIL lines, and return the figures.

    Raises BenchmarkError when a server fails, the login fails, or a page does
    not render.
    """
    args = build_parser().parse_args(argv)
    load_average = os.getloadavg()

    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="mailroom-pages-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        redis_url, _redis_process = stack.enter_context(private_redis(workdir))
        database_url = args.database_url or stack.enter_context(
            postgres_database(args.postgres_url, "mailroom_pages")
        )
        password = secrets.token_urlsafe(16)
        dataset = fill_database(
            database_url, args.connectors, args.jobs, password, datetime.now(UTC)
        )

        env = app_environment(database_url, redis_url, workdir)
        port = free_port()
        gunicorn = start_gunicorn(
            env, port, args.gunicorn_workers, args.gunicorn_threads, workdir / "gunicorn.log"
        )
        stack.callback(stop_process, gunicorn, "gunicorn")
        url = f"http://127.0.0.1:{port}"
        cookies = log_in(url, password)

        report = Report(
            dataset=dataset,
            gunicorn_workers=args.gunicorn_workers,
            gunicorn_threads=args.gunicorn_threads,
            clients=args.clients,
            requests=args.requests,
            database=sa.make_url(database_url).get_backend_name(),
            load_average=load_average,
            code=code_version(),
        )
        pages = pages_to_measure(deep_page_cursor(database_url, dataset.projects, args.deep_page))
        for page in pages:
            result = measure_page(url, cookies, page, args.clients, args.requests, gunicorn.pid)
            report.pages.append(result)
        stop_process(gunicorn, "gunicorn")

        queries = in_child_process(
            count_queries,
            database_url,
            redis_url,
            env["FILES_ROOT"],
            dataset.admin_id,
            [page.path for page in pages],
        )
        for result, page_queries in zip(report.pages, queries, strict=True):
            result.sql = page_queries
    print(format_report(report))
    return report


def _cli() -> int:
    # Only this module logs progress, so Alembic and the servers stay at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    logging.getLogger("benchmarks.connector_scale").setLevel(logging.INFO)
    try:
        main()
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
