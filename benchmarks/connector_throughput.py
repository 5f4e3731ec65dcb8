"""Connector throughput: Mailroom's connector run against a bare imaplib pipeline.

Both pipelines read the same messages from a private Dovecot over IMAPS with
XOAUTH2, write each attachment to a file with fsync and delete the messages. The
bare pipeline does only that, so the ratio of the two rates is the cost of what
Mailroom adds: extraction with name handling and hashing, the job and ledger
commits, and the file store. Each pipeline runs in a fresh child process, so its
peak RSS leaves out the servers and the message generator of this process.

Run ``python -m benchmarks.connector_throughput --help`` from the repository root.
Linux only, because the peak RSS comes from /proc/self/status.

Module-level imports are standard library only, because the spawned child of the
bare pipeline imports this module and Mailroom's dependencies would add about
55 MB to its peak RSS. Mailroom modules are imported inside the functions that
use them.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import imaplib
import logging
import multiprocessing
import os
import random
import re
import resource
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urljoin, urlsplit

if TYPE_CHECKING:
    from config import Settings
    from devservers.dovecot import Dovecot
    from devservers.oauth_server import AuthServer
    from runtime import Services

logger = logging.getLogger("benchmarks.connector_throughput")

MAILBOX_USER = "intake@example.com"
MAILBOX_PASSWORD = "benchmark-consent-password"
OAUTH_CLIENT_ID = "mailroom-benchmark"
OAUTH_CLIENT_SECRET = "mailroom-benchmark-secret"
PROVIDER_KEY = "local"
# The consent redirect is read from its Location header, so nothing requests this URL.
CALLBACK_URL = "http://localhost/home-api/authentication/mail/oauth2/code"
FOLDER = "INBOX"

HTTP_TIMEOUT = 10.0
"""Seconds for each request to the local OAuth server."""
MAIL_TIMEOUT = 30.0
"""Socket timeout in seconds of both pipelines' IMAP connections."""
REDIS_START_TIMEOUT = 10.0

MB = 1_000_000
"""Memory figures and the memory target are in MB of 10^6 bytes."""
THROUGHPUT_TARGET = 0.7
"""Mailroom's messages/s must be at least this share of the bare pipeline's."""
MEMORY_ALLOWANCE = 150 * MB
"""Mailroom's peak RSS must stay under twice the largest message plus this."""

# A message costs about this many bytes besides the base64 lines of its attachment.
_ENVELOPE_BYTES = 700
# base64 turns each 57 bytes into a 76-character line plus CRLF.
_BASE64_INPUT, _BASE64_LINE = 57, 78
_FETCH_UID = re.compile(rb"UID (\d+)")
_CONSENT_FORM = re.compile(r'<form method="post" action="([^"]+)"')

T = TypeVar("T")


class BenchmarkError(RuntimeError):
    """A pipeline or a check failed, so the figures of this run mean nothing."""


# Messages


@dataclass
class MessageSet:
    """``count`` messages of about ``size_kb`` KiB, the same bytes on every iteration.

    The bytes depend only on ``seed``, so the bare pipeline gets exactly the
    messages Mailroom got, and another seed gives messages that Mailroom's
    duplicate check does not recognize.
    """

    count: int
    size_kb: int
    seed: int
    largest: int = 0

    def __iter__(self) -> Iterator[bytes]:
        rng = random.Random(self.seed)  # noqa: S311 - test data, reproducible by seed
        payload_bytes = max(
            1, (self.size_kb * 1024 - _ENVELOPE_BYTES) * _BASE64_INPUT // _BASE64_LINE
        )
        for index in range(1, self.count + 1):
            raw = build_message(self.seed, index, rng.randbytes(payload_bytes))
            self.largest = max(self.largest, len(raw))
            yield raw


def build_message(seed: int, index: int, payload: bytes) -> bytes:
    """Return a message with a short text body and ``payload`` as a base64 attachment."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "client@example.org"
    message["To"] = MAILBOX_USER
    message["Subject"] = f"Benchmark document {index}"
    message["Date"] = "Mon, 30 Nov 2026 09:15:00 +0000"
    message["Message-ID"] = f"<benchmark-{seed}-{index}@example.org>"
    message.set_content("Please translate the attached file.\n")
    message.add_attachment(
        payload,
        maintype="application",
        subtype="octet-stream",
        filename=f"document-{seed}-{index:06d}.bin",
    )
    return message.as_bytes()


# Servers


def _redis_responds(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """Run a redis-server on a Unix socket in ``workdir`` and yield its URL.

    A socket file needs no TCP port, and mkdtemp makes ``workdir`` private to this user.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchmarkError(
            "redis-server is not installed. Install it (Debian: apt-get install redis-server) "
            "or pass --redis-url"
        )
    socket_path = workdir / "redis.sock"
    command = [binary, "--port", "0", "--unixsocket", str(socket_path)]
    command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"unix://{socket_path}"
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while not _redis_responds(url):
            if process.poll() is not None:
                raise BenchmarkError(f"redis-server exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"redis-server did not respond to PING on {socket_path} "
                    f"within {REDIS_START_TIMEOUT} s"
                )
            time.sleep(0.05)
        logger.info("redis-server pid %d listens on %s", process.pid, socket_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def mail_servers(workdir: Path) -> Iterator[tuple[AuthServer, Dovecot]]:
    """Start the local OAuth server and a Dovecot that checks its tokens by introspection."""
    from devservers.dovecot import Dovecot
    from devservers.oauth_server import AuthServer, AuthServerConfig, ClientSpec

    config = AuthServerConfig(
        users={MAILBOX_USER: MAILBOX_PASSWORD},
        clients=[ClientSpec(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, [CALLBACK_URL])],
        introspection_clients={"dovecot": secrets.token_urlsafe(16)},
    )
    with AuthServer(config) as auth:
        dovecot = Dovecot(
            workdir / "dovecot", introspection_url=auth.introspection_url_for("dovecot")
        )
        with dovecot:
            yield auth, dovecot


# Mailroom's database, connector and consent


def mailroom_settings(
    workdir: Path,
    database_url: str,
    redis_url: str,
    auth: AuthServer,
    dovecot: Dovecot,
    batch_size: int,
) -> Settings:
    from cryptography.fernet import Fernet

    from config import Settings

    provider: dict[str, object] = {
        "label": "Local OAuth server",
        "authorization_url": auth.authorization_url,
        "token_url": auth.token_url,
        "scopes": ["mail", "offline_access"],
        "imap_host": dovecot.host,
    }
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key=secrets.token_urlsafe(32),
        encryption_keys=(Fernet.generate_key().decode(),),
        files_root=workdir / "files",
        ca_file=dovecot.ca_file,
        oauth_providers={PROVIDER_KEY: provider},
        http_timeout=HTTP_TIMEOUT,
        mail_timeout=MAIL_TIMEOUT,
        fetch_batch_size=batch_size,
    )


def create_connector(services: Services, dovecot: Dovecot) -> tuple[int, int]:
    """Create the schema, reference data, an admin and an OAuth2 connector.

    Returns (connector id, mail account id). The database must be empty,
    because rows left by another run would change what is measured.
    """
    import sqlalchemy as sa

    import migrations
    from models import Aggregation, AuthMethod, Client, Connector, MailAccount, User
    from referencedata import seed

    shown_url = sa.make_url(services.settings.database_url).render_as_string(hide_password=True)
    migrations.upgrade(services.settings.database_url)
    services.store.ensure()
    with services.db.session() as session:
        if session.scalar(sa.select(sa.func.count()).select_from(Connector)):
            raise BenchmarkError(
                f"{shown_url} already has connectors. Pass an empty database "
                "(for PostgreSQL, CREATE DATABASE with a new name)"
            )
        seed(session)
        admin = User(email="benchmark-admin@example.com", name="Benchmark admin", is_admin=True)
        account = MailAccount(
            provider=PROVIDER_KEY,
            email=MAILBOX_USER,
            client_id=OAUTH_CLIENT_ID,
            client_secret_encrypted=services.box.encrypt(OAUTH_CLIENT_SECRET),
        )
        client = session.scalars(sa.select(Client).order_by(Client.id)).first()
        if client is None:
            raise BenchmarkError("the reference data has no client to attach the connector to")
        connector = Connector(
            name="Throughput benchmark",
            client=client,
            aggregation=Aggregation.SEPARATELY,
            auth_method=AuthMethod.OAUTH2,
            host=dovecot.host,
            port=dovecot.imaps_port,
            use_ssl=True,
            username=MAILBOX_USER,
            folder=FOLDER,
            mail_account=account,
        )
        session.add_all([admin, connector])
        session.commit()
        ids = connector.id, account.id, admin.id
    connector_id, account_id, admin_id = ids
    give_consent(services, account_id, admin_id)
    return connector_id, account_id


def give_consent(services: Services, account_id: int, admin_id: int) -> None:
    """Run Mailroom's consent flow: authorization URL, Allow on the consent page, callback."""
    from datetime import UTC, datetime

    from mailauth.consent import finish_consent, start_consent
    from models import MailAccount

    binding = secrets.token_hex(16)
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        if account is None:
            raise BenchmarkError(f"mail account {account_id} vanished before the consent")
        url = start_consent(
            session,
            account=account,
            provider=services.providers[PROVIDER_KEY],
            box=services.box,
            user_id=admin_id,
            session_binding=binding,
            redirect_uri=CALLBACK_URL,
            return_to="/",
            now=datetime.now(UTC),
        )
        session.commit()

    query = parse_qs(urlsplit(_allow_on_consent_page(url)).query)
    with services.db.session() as session:
        finish_consent(
            session,
            state=query.get("state", [None])[0],
            code=query.get("code", [None])[0],
            error=query.get("error", [None])[0],
            error_description=query.get("error_description", [None])[0],
            user_id=admin_id,
            session_binding=binding,
            providers=services.providers,
            box=services.box,
            redirect_uri=CALLBACK_URL,
            http_timeout=HTTP_TIMEOUT,
            now=datetime.now(UTC),
        )


def _allow_on_consent_page(authorization_url: str) -> str:
    """Sign in on the OAuth server's consent page, press Allow and return the redirect."""
    import requests

    with requests.Session() as http:
        page = http.get(authorization_url, allow_redirects=False, timeout=HTTP_TIMEOUT)
        if page.status_code != 200:
            raise BenchmarkError(f"the consent page returned HTTP {page.status_code}: {page.text}")
        match = _CONSENT_FORM.search(page.text)
        if match is None:
            raise BenchmarkError("the consent page of the local OAuth server has no form")
        answer = http.post(
            urljoin(authorization_url, html.unescape(match.group(1))),
            data={"email": MAILBOX_USER, "password": MAILBOX_PASSWORD, "action": "allow"},
            allow_redirects=False,
            timeout=HTTP_TIMEOUT,
        )
    if answer.status_code != 302:
        raise BenchmarkError(f"consent was not given: HTTP {answer.status_code}: {answer.text}")
    return answer.headers["Location"]


# The pipelines, each run in a child process


@dataclass(frozen=True)
class Measurement:
    """One pipeline's run over a full folder, measured in the child process."""

    seconds: float
    """Wall time from connecting to the server to the logout after the last delete."""
    cpu_seconds: float
    """User plus system CPU time of the child process over the same span, without Dovecot's."""
    messages: int
    """Messages the pipeline deleted from the folder."""
    files: int
    """Jobs that Mailroom created, or attachment files that the bare pipeline wrote."""
    rss_before: int
    """Peak RSS in bytes when the run started: interpreter and imported modules."""
    peak_rss: int
    """Peak RSS in bytes of the whole child process, read when the run ended."""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass(frozen=True)
class MailroomRun:
    measurement: Measurement
    run_id: int
    status: str
    error: str | None
    problems: list[str]


@dataclass(frozen=True)
class BareRequest:
    host: str
    port: int
    ca_file: str
    username: str
    access_token: str
    batch_size: int
    output_dir: str


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss() -> int:
    """Return this process's peak RSS in bytes, read from VmHWM in /proc/self/status.

    ru_maxrss is no use in a spawned child: Linux keeps the high-water mark of
    the memory image that exec replaced, so the child starts at the parent's peak.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise BenchmarkError("/proc/self/status has no VmHWM line; the benchmark needs Linux")


def run_mailroom(settings: Settings, connector_id: int) -> MailroomRun:
    """Run the connector once with the services a Celery worker builds."""
    from intake import run_connector
    from runtime import build_services

    services = build_services(settings)
    context = services.intake_context()
    rss_before = _peak_rss()
    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    outcome = run_connector(context, connector_id, "manual")
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_started
    peak_rss = _peak_rss()
    services.db.dispose()
    services.redis.close()
    if outcome is None:
        raise BenchmarkError(f"connector {connector_id} did not run: it is missing or locked")
    measurement = Measurement(
        seconds, cpu_seconds, outcome.messages_deleted, outcome.jobs_created, rss_before, peak_rss
    )
    problems = [problem[-1] for problem in outcome.problems]
    return MailroomRun(measurement, outcome.run_id, outcome.status.value, outcome.error, problems)


def _xoauth2(username: str, access_token: str) -> Callable[[bytes], bytes]:
    initial = f"user={username}\x01auth=Bearer {access_token}\x01\x01".encode()
    answers = [initial]

    def answer(challenge: bytes) -> bytes:
        # A second challenge contains the server's error, and an empty reply ends the exchange.
        return answers.pop() if answers else b""

    return answer


def _checked(response: tuple[str, Any], command: str) -> list[Any]:
    status, data = response
    if status != "OK":
        raise BenchmarkError(f"{command} failed: {data!r}")
    return data


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _save_attachments(fetched: list[Any], output_dir: Path) -> int:
    """Parse each message of a UID FETCH response and save its attachments; count them."""
    files = 0
    for item in fetched:
        if not isinstance(item, tuple):
            continue
        match = _FETCH_UID.search(item[0])
        if match is None:
            raise BenchmarkError(f"UID FETCH response is missing the UID: {item[0][:200]!r}")
        uid = match.group(1).decode()

        message = email.message_from_bytes(item[1], policy=email.policy.default)
        for number, part in enumerate(message.iter_attachments(), start=1):
            _write_synced(output_dir / f"{uid}-{number}.bin", part.get_content())
            files += 1
    return files


def run_bare(request: BareRequest) -> Measurement:
    """Fetch, parse, save and delete with the standard library alone, batch by batch."""
    context = ssl.create_default_context(cafile=request.ca_file)
    output_dir = Path(request.output_dir)
    messages = files = 0
    rss_before = _peak_rss()
    cpu_started = _cpu_seconds()
    started = time.perf_counter()

    imap = imaplib.IMAP4_SSL(request.host, request.port, ssl_context=context, timeout=MAIL_TIMEOUT)
    try:
        _checked(
            imap.authenticate("XOAUTH2", _xoauth2(request.username, request.access_token)),
            "AUTHENTICATE XOAUTH2",
        )
        _checked(imap.select(FOLDER), f"SELECT {FOLDER}")
        uids = _checked(imap.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()

        for start in range(0, len(uids), request.batch_size):
            batch = uids[start : start + request.batch_size]
            uid_set = b",".join(batch).decode()
            fetched = _checked(imap.uid("FETCH", uid_set, "(BODY.PEEK[])"), "UID FETCH")
            files += _save_attachments(fetched, output_dir)
            _checked(imap.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
            _checked(imap.uid("EXPUNGE", uid_set), "UID EXPUNGE")
            messages += len(batch)
        imap.logout()
    except BaseException:
        imap.shutdown()
        raise

    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_started
    return Measurement(seconds, cpu_seconds, messages, files, rss_before, _peak_rss())


def in_child_process(function: Callable[..., T], *args: Any) -> T:
    """Call ``function`` in a new spawned process, so its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


# One benchmark run


@dataclass(frozen=True)
class Repetition:
    mailroom: Measurement
    bare: Measurement
    jobs_in_database: int
    left_after_mailroom: int
    left_after_bare: int

    @property
    def ratio(self) -> float:
        return self.mailroom.rate / self.bare.rate


@dataclass
class Report:
    messages: int
    size_kb: int
    batch_size: int
    database: str
    load_average: tuple[float, float, float]
    """1, 5 and 15 minute load averages when the benchmark started."""
    largest_message: int = 0
    repetitions: list[Repetition] = field(default_factory=list)

    @property
    def median_ratio(self) -> float:
        return statistics.median(r.ratio for r in self.repetitions)

    @property
    def memory_limit(self) -> int:
        return 2 * self.largest_message + MEMORY_ALLOWANCE

    @property
    def mailroom_peak_rss(self) -> int:
        return max(r.mailroom.peak_rss for r in self.repetitions)

    @property
    def throughput_passed(self) -> bool:
        return self.median_ratio >= THROUGHPUT_TARGET

    @property
    def memory_passed(self) -> bool:
        return self.mailroom_peak_rss < self.memory_limit


def fill_folder(dovecot: Dovecot, messages: MessageSet) -> None:
    started = time.perf_counter()
    uids = dovecot.append_many(MAILBOX_USER, messages, FOLDER)
    if len(uids) != messages.count:
        raise BenchmarkError(f"appended {len(uids)} messages instead of {messages.count}")
    logger.info("appended %d messages in %.1f s", messages.count, time.perf_counter() - started)


def check_mailroom(services: Services, run: MailroomRun, count: int) -> int:
    """Check that the run succeeded with one job per message, and return the job count."""
    import sqlalchemy as sa

    from models import Job

    if run.status != "succeeded" or run.problems:
        raise BenchmarkError(
            f"Mailroom run {run.run_id} ended {run.status} ({run.error}); "
            f"problems: {run.problems[:5]}"
        )
    if run.measurement.messages != count:
        raise BenchmarkError(f"Mailroom deleted {run.measurement.messages} of {count} messages")
    with services.db.session() as session:
        jobs = session.scalar(
            sa.select(sa.func.count()).select_from(Job).where(Job.run_id == run.run_id)
        )
    if jobs != count:
        raise BenchmarkError(f"Mailroom run {run.run_id} left {jobs} jobs for {count} messages")
    return int(jobs)


def check_empty(dovecot: Dovecot, pipeline: str) -> int:
    left = len(dovecot.list_uids(MAILBOX_USER, FOLDER))
    if left:
        raise BenchmarkError(f"{left} messages are still in {FOLDER} after the {pipeline} run")
    return left


def run_repetition(
    number: int,
    args: argparse.Namespace,
    services: Services,
    dovecot: Dovecot,
    connector_id: int,
    account_id: int,
    report: Report,
) -> Repetition:
    """Fill the folder, run Mailroom, refill it with the same messages, run the bare pipeline."""
    messages = MessageSet(args.messages, args.size_kb, seed=number)

    fill_folder(dovecot, messages)
    logger.info("repetition %d: running Mailroom's connector", number)
    mailroom = in_child_process(run_mailroom, services.settings, connector_id)
    jobs = check_mailroom(services, mailroom, args.messages)
    left_after_mailroom = check_empty(dovecot, "Mailroom")
    # The job files are not needed after the check, and repetitions would fill the disk.
    shutil.rmtree(services.store.root / "jobs")
    services.store.ensure()

    fill_folder(dovecot, messages)
    output_dir = services.store.root.parent / f"bare-{number}"
    output_dir.mkdir()
    request = BareRequest(
        host=dovecot.host,
        port=dovecot.imaps_port,
        ca_file=str(dovecot.ca_file),
        username=MAILBOX_USER,
        # The token manager refreshes the token when a long benchmark outlives it.
        access_token=services.tokens.access_token(account_id),
        batch_size=args.batch_size,
        output_dir=str(output_dir),
    )
    logger.info("repetition %d: running the bare pipeline", number)
    bare = in_child_process(run_bare, request)
    written = sum(1 for _ in output_dir.iterdir())
    if bare.messages != args.messages or written != args.messages:
        raise BenchmarkError(
            f"the bare pipeline deleted {bare.messages} and saved {written} files "
            f"for {args.messages} messages"
        )
    left_after_bare = check_empty(dovecot, "bare")
    shutil.rmtree(output_dir)

    report.largest_message = max(report.largest_message, messages.largest)
    return Repetition(mailroom.measurement, bare, jobs, left_after_mailroom, left_after_bare)


# Output


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


_COLUMNS = (
    "run",
    "Mailroom s",
    "Mailroom CPU s",
    "Mailroom msg/s",
    "bare s",
    "bare CPU s",
    "bare msg/s",
    "Mailroom/bare",
    "Mailroom peak RSS",
    "bare peak RSS",
)


def _table_line(cells: Sequence[str]) -> str:
    widths = [max(len(title), len("median")) for title in _COLUMNS]
    return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=False))


def format_report(report: Report) -> str:
    load = ", ".join(f"{value:.2f}" for value in report.load_average)
    lines = [
        f"Connector throughput: {report.messages} messages, largest {report.largest_message:,} "
        f"bytes, batch size {report.batch_size}, database {report.database}, "
        f"load average before the run {load}",
        _table_line(_COLUMNS),
    ]
    for number, repetition in enumerate(report.repetitions, start=1):
        mailroom, bare = repetition.mailroom, repetition.bare
        cells = [
            str(number),
            f"{mailroom.seconds:.2f}",
            f"{mailroom.cpu_seconds:.2f}",
            f"{mailroom.rate:.1f}",
            f"{bare.seconds:.2f}",
            f"{bare.cpu_seconds:.2f}",
            f"{bare.rate:.1f}",
            f"{repetition.ratio:.2f}",
            _mb(mailroom.peak_rss),
            _mb(bare.peak_rss),
        ]
        lines.append(_table_line(cells))
    if len(report.repetitions) > 1:
        mailroom_rate = statistics.median(r.mailroom.rate for r in report.repetitions)
        bare_rate = statistics.median(r.bare.rate for r in report.repetitions)
        cells = ["median", "", "", f"{mailroom_rate:.1f}", "", "", f"{bare_rate:.1f}"]
        lines.append(_table_line([*cells, f"{report.median_ratio:.2f}"]))

    first = report.repetitions[0]
    lines.append(
        f"RSS when the run started (interpreter and imports): Mailroom "
        f"{_mb(first.mailroom.rss_before)}, bare {_mb(first.bare.rss_before)}"
    )
    verdict = "PASS" if report.throughput_passed else "FAIL"
    lines.append(
        f"{verdict} throughput: Mailroom/bare {report.median_ratio:.2f} "
        f"(median of {len(report.repetitions)}), target at least {THROUGHPUT_TARGET:.2f}"
    )
    verdict = "PASS" if report.memory_passed else "FAIL"
    lines.append(
        f"{verdict} memory: Mailroom peak RSS {_mb(report.mailroom_peak_rss)}, limit "
        f"{_mb(report.memory_limit)} (2 x largest message + {_mb(MEMORY_ALLOWANCE)})"
    )
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.connector_throughput",
        description=(
            "Measure messages/s and peak RSS of one connector run against a bare "
            "imaplib + email pipeline on the same messages, with a private Dovecot, "
            "OAuth server and Redis on this machine. Prints PASS or FAIL per target "
            "and exits 0 either way; a nonzero exit means the benchmark itself failed."
        ),
    )
    parser.add_argument(
        "--messages", type=_positive, default=1000, help="messages in the folder (default 1000)"
    )
    parser.add_argument(
        "--size-kb",
        type=_positive,
        default=100,
        help="approximate size of each message in KiB, one random binary attachment (default 100)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=50,
        help="UIDs per UID FETCH in both pipelines (default 50)",
    )
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of an empty database for Mailroom "
        "(default: a SQLite file in the temporary directory)",
    )
    parser.add_argument(
        "--redis-url",
        help="Redis URL for the connector's run lock (default: start a private redis-server)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=1,
        help="measure both pipelines this many times on fresh messages (default 1)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> Report:
    """Run the benchmark, print its table and PASS/FAIL lines, and return the figures.

    Raises BenchmarkError when a pipeline fails or leaves messages or jobs
    that do not add up.
    """
    args = build_parser().parse_args(argv)
    load_average = os.getloadavg()

    from runtime import build_services

    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="mailroom-benchmark-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        database_url = args.database_url or f"sqlite:///{workdir / 'mailroom.db'}"
        redis_url = args.redis_url or stack.enter_context(private_redis(workdir))
        auth, dovecot = stack.enter_context(mail_servers(workdir))

        settings = mailroom_settings(
            workdir, database_url, redis_url, auth, dovecot, args.batch_size
        )
        services = build_services(settings)
        stack.callback(services.db.dispose)
        stack.callback(services.redis.close)
        connector_id, account_id = create_connector(services, dovecot)

        report = Report(
            args.messages,
            args.size_kb,
            args.batch_size,
            services.db.engine.dialect.name,
            load_average,
        )
        for number in range(1, args.repeat + 1):
            repetition = run_repetition(
                number, args, services, dovecot, connector_id, account_id, report
            )
            report.repetitions.append(repetition)
            logger.info(
                "repetition %d: Mailroom %.1f msg/s, bare %.1f msg/s",
                number,
                repetition.mailroom.rate,
                repetition.bare.rate,
            )
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
