"""Fixtures for real servers on loopback: Redis, PostgreSQL, the OAuth server, Dovecot."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis as redis_lib
import sqlalchemy as sa

from devservers.dovecot import Dovecot, find_dovecot
from devservers.oauth_server import AuthServer, AuthServerConfig, ClientSpec

from .smtp_servers import SmtpSink

IN_CI = bool(os.environ.get("CI"))


def require(condition: bool, reason: str) -> None:
    """Skip on a developer machine, fail in CI, when a server is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so this is an error)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis_lib.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis base URL: TEST_REDIS_URL if set, otherwise a private server.

    A private server per test session keeps parallel test runs from
    flushing each other's locks and queues.
    """
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        require(_redis_answers(url), f"Redis does not answer at TEST_REDIS_URL={url}")
        yield url
        return
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server is not installed (apt-get install redis-server)")
    assert binary is not None
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not _redis_answers(url):
        if time.monotonic() > deadline:
            process.terminate()
            pytest.fail("the Redis server started for the tests did not answer within 10 s")
        time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A Redis database emptied before each test (database 15 is the tests')."""
    url = f"{redis_server}/15"
    redis_lib.Redis.from_url(url).flushdb()
    yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    admin_url = os.environ.get(
        "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    try:
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        require(False, f"PostgreSQL does not answer at {admin_url}: {exc.orig}")
    name = f"mailroom_test_{uuid.uuid4().hex[:8]}"
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield admin_url.rsplit("/", 1)[0] + "/" + name
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test alone, for processes that share it."""
    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"mailroom_e2e_{uuid.uuid4().hex[:8]}"
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield admin_url.rsplit("/", 1)[0] + "/" + name
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


# The mailbox that connectors read, and its owner's password at the OAuth server.
MAILBOX_USER = "intake@example.com"
MAILBOX_PASSWORD = "intake-consent-password"
# A mailbox that logs in with a password instead of OAuth.
PASSWORD_USER = "office@example.com"
PASSWORD_USER_PASSWORD = "office-imap-password"
OAUTH_CLIENT_ID = "mailroom-tests"
OAUTH_CLIENT_SECRET = "mailroom-tests-secret"
TEST_CLIENT_CALLBACK = "http://localhost/home-api/authentication/mail/oauth2/code"


@dataclass
class MailStack:
    """The local OAuth server and a Dovecot that checks its tokens."""

    auth: AuthServer
    dovecot: Dovecot
    sink: SmtpSink  # where Dovecot's submission service relays to
    web_port: int  # reserved for a Mailroom started by an end-to-end test

    @property
    def web_callback(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/home-api/authentication/mail/oauth2/code"

    def provider_config(self) -> dict[str, dict[str, object]]:
        return {
            "local": {
                "label": "Local OAuth server",
                "authorization_url": self.auth.authorization_url,
                "token_url": f"{self.auth.url}/token",
                "scopes": ["mail", "offline_access"],
                "imap_host": "127.0.0.1",
            }
        }

    def empty_folder(self, user: str = MAILBOX_USER, folder: str = "INBOX") -> None:
        with self.dovecot.master_session(user) as imap:
            status, data = imap.select(folder)
            # "1:*" is an invalid message set in an empty folder.
            if status == "OK" and int(data[0]) > 0:
                imap.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                imap.expunge()


@pytest.fixture(scope="session")
def mail_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    require(find_dovecot() is not None, "Dovecot is not installed (apt-get install dovecot-imapd)")
    web_port = free_port()
    config = AuthServerConfig(
        users={MAILBOX_USER: MAILBOX_PASSWORD},
        clients=[
            ClientSpec(
                client_id=OAUTH_CLIENT_ID,
                client_secret=OAUTH_CLIENT_SECRET,
                redirect_uris=[
                    TEST_CLIENT_CALLBACK,
                    f"http://127.0.0.1:{web_port}/home-api/authentication/mail/oauth2/code",
                ],
            )
        ],
        introspection_clients={"dovecot": "dovecot-introspection-secret"},
    )
    auth = AuthServer(config).start()
    introspection = f"http://dovecot:dovecot-introspection-secret@127.0.0.1:{auth.port}/introspect"
    sink = SmtpSink(free_port()).start()
    dovecot = Dovecot(
        tmp_path_factory.mktemp("dovecot"),
        introspection_url=introspection,
        password_users={PASSWORD_USER: PASSWORD_USER_PASSWORD},
        relay=("127.0.0.1", sink.port),
    )
    dovecot.start()
    try:
        yield MailStack(auth=auth, dovecot=dovecot, sink=sink, web_port=web_port)
    finally:
        dovecot.stop()
        sink.stop()
        auth.stop()


__all__ = [
    "IN_CI",
    "MAILBOX_PASSWORD",
    "MAILBOX_USER",
    "MailStack",
    "OAUTH_CLIENT_ID",
    "OAUTH_CLIENT_SECRET",
    "PASSWORD_USER",
    "PASSWORD_USER_PASSWORD",
    "free_port",
    "fresh_postgres_url",
    "mail_stack",
    "postgres_url",
    "redis_server",
    "redis_url",
    "require",
]
