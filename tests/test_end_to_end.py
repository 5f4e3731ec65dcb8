"""The main job end to end with real processes.

gunicorn serves the app, the two Celery workers and Celery beat run against Redis,
and an admin drives the pages over HTTP: adds a connector, gives consent at
the local OAuth server, activates it, and finds the projects that beat and
the worker made from the e-mails in Dovecot.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet

import migrations
from celery_config import CONTROL_CONCURRENCY, CONTROL_QUEUE, SCANS_QUEUE
from database import Database
from launcher import worker_command
from mailauth import SecretBox
from models import Client, Connector, ConnectorRun, Job, Language, MailAccount, RunStatus, User
from referencedata import seed

from .mailhelpers import (
    DOCX_BYTES,
    PDF_BYTES,
    message_rfc2231,
    message_with_files,
    message_without_files,
)
from .servers import (
    MAILBOX_PASSWORD,
    MAILBOX_USER,
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    MailStack,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN = "e2e-admin@example.com"
ADMIN_PASSWORD = "end-to-end password"
CZECH_NAME = "Překlad smlouvy – příloha č. 1.docx"
PERSON_RESPONSIBLE = "maria.lopez@example.com"
WAIT_SECONDS = 60


@dataclass
class RunningApp:
    url: str
    env: dict[str, str]
    db: Database
    box: SecretBox
    logs: Path


def _wait_for(predicate, timeout: float, what: str, processes=()):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(
                    f"{process.args[:4]} exited with {process.returncode} while waiting for {what}"
                )
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(params=["sqlite", "postgresql"])
def app_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded default, and the production database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'e2e.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def running_app(
    tmp_path: Path, redis_server: str, mail_stack: MailStack, app_database_url: str
) -> Iterator[RunningApp]:
    redis_url = f"{redis_server}/14"
    redis.Redis.from_url(redis_url).flushdb()
    key = Fernet.generate_key().decode()
    env = {
        **os.environ,
        "DATABASE_URL": app_database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "end-to-end-secret-key",
        "ENCRYPTION_KEYS": key,
        "FILES_ROOT": str(tmp_path / "files"),
        "OAUTH_PROVIDERS": json.dumps(mail_stack.provider_config()),
        "MAIL_CA_FILE": str(mail_stack.dovecot.ca_file),
        "BEAT_TICK_SECONDS": "1",
        "PUBLIC_URL": f"http://127.0.0.1:{mail_stack.web_port}",
        "LOG_FORMAT": "json",
        "MAILROOM_NEW_USER_PASSWORD": ADMIN_PASSWORD,
    }
    migrations.upgrade(env["DATABASE_URL"])
    db = Database(env["DATABASE_URL"])
    with db.session() as session:
        seed(session)
    created = subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", "users", "create", ADMIN, "--admin"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    logs = tmp_path / "logs"
    logs.mkdir()
    commands = {
        "web": [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{mail_stack.web_port}",
                "--workers", "1", "--threads", "4", "wsgi:app"],
        # The same two workers as `make run`: scans, and beat's ticks with the outbox.
        "worker": worker_command(BIN / "celery", SCANS_QUEUE, 2),
        "control-worker": worker_command(BIN / "celery", CONTROL_QUEUE, CONTROL_CONCURRENCY),
        "beat": [str(BIN / "celery"), "-A", "worker", "beat", "--loglevel", "INFO",
                 "--schedule", str(tmp_path / "beat-schedule")],
    }  # fmt: skip
    processes = []
    for name, command in commands.items():
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        processes.append(
            (subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log), log)
        )
    url = f"http://127.0.0.1:{mail_stack.web_port}"

    def web_answers() -> bool:
        try:
            return requests.get(f"{url}/login", timeout=5).status_code == 200
        except requests.RequestException:
            # Refused before gunicorn listens; a timeout while its worker boots.
            return False

    try:
        _wait_for(web_answers, 30, "the web app", [p for p, _ in processes])
        yield RunningApp(url=url, env=env, db=db, box=SecretBox([key]), logs=logs)
    finally:
        for process, _log in processes:
            process.terminate()
        for process, log in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
        db.dispose()


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page
    )
    assert match, "no CSRF token in the page"
    return match.group(1)


def _ids(db: Database) -> dict[str, str]:
    with db.session() as session:
        client = session.scalars(
            sa.select(Client).where(Client.name == "Northwind Pharma GmbH")
        ).one()
        person = session.scalars(sa.select(User).where(User.email == PERSON_RESPONSIBLE)).one()
        languages = {
            language.code: str(language.id)
            for language in session.scalars(
                sa.select(Language).where(Language.code.in_(["en", "de", "cs"]))
            )
        }
    return {"client": str(client.id), "person": str(person.id), **languages}


def test_email_becomes_project_through_beat_and_worker(
    running_app: RunningApp, mail_stack: MailStack
) -> None:
    app = running_app
    mail_stack.empty_folder(MAILBOX_USER)
    http = requests.Session()

    login_page = http.get(f"{app.url}/login", timeout=10)
    logged_in = http.post(
        f"{app.url}/login",
        data={"csrf_token": _csrf(login_page.text), "email": ADMIN, "password": ADMIN_PASSWORD},
        timeout=10,
    )
    assert "Dashboard" in logged_in.text

    # Add the connector inactive, so beat leaves it alone until consent is given.
    new_url = f"{app.url}/configuration/integration/smart-connectors/new"
    form_page = http.get(new_url, timeout=10)
    assert "Add Smart Connector" in form_page.text or "Smart Connector" in form_page.text
    ids = _ids(app.db)
    form = {
        "csrf_token": _csrf(form_page.text),
        "job_kind": "project",
        "name": "Northwind e-mail intake",
        "client": ids["client"],
        "budget_code": "NWP-2026",
        "aggregation": "separately",
        "files_location": "email",
        "auth_method": "oauth2",
        "provider": "local",
        "host": "127.0.0.1",
        "port": str(mail_stack.dovecot.imaps_port),
        "use_ssl": "y",
        "username": MAILBOX_USER,
        "folder": "INBOX",
        "oauth_client_id": OAUTH_CLIENT_ID,
        "oauth_client_secret": OAUTH_CLIENT_SECRET,
        "person_responsible": ids["person"],
        "source_language": ids["en"],
        "target_languages": [ids["de"], ids["cs"]],
        "interval_minutes": "1",
        "generate_token": "Generate new token",
    }
    to_provider = http.post(new_url, data=form, allow_redirects=False, timeout=10)
    assert to_provider.status_code == 302, to_provider.text
    authorize = to_provider.headers["Location"]
    assert authorize.startswith(mail_stack.auth.authorization_url)
    assert "code_challenge_method=S256" in authorize

    # The consent page of the authorization server, then back to Mailroom.
    consent_page = http.get(authorize, timeout=10)
    action = re.search(r'<form method="post" action="([^"]+)"', consent_page.text).group(1)
    back = http.post(
        mail_stack.auth.url + action.replace("&amp;", "&"),
        data={"email": MAILBOX_USER, "password": MAILBOX_PASSWORD, "action": "allow"},
        allow_redirects=False,
        timeout=10,
    )
    assert back.headers["Location"].startswith(
        f"{app.url}/home-api/authentication/mail/oauth2/code"
    )
    connector_page = http.get(back.headers["Location"], timeout=10)
    assert "OAuth2 Token was generated" in connector_page.text
    assert "Your access token is active" in connector_page.text
    assert OAUTH_CLIENT_SECRET not in connector_page.text

    with app.db.session() as session:
        connector = session.scalars(sa.select(Connector)).one()
        connector_id = connector.id
        assert connector.active is False

    # The company sends through the same mailbox: its token is already active.
    mail_stack.sink.clear()
    settings_url = f"{app.url}/configuration/general/settings/email"
    settings_page = http.get(settings_url, timeout=10)
    saved = http.post(
        settings_url,
        data={
            "csrf_token": _csrf(settings_page.text),
            "auth_method": "oauth2",
            "server": f"127.0.0.1:{mail_stack.dovecot.submission_port}",
            "email_address": MAILBOX_USER,
            "connection_type": "tls",
            "provider": "local",
            "save": "Save",
        },
        timeout=10,
    )
    assert "Your access token is active" in saved.text
    tested = http.post(
        f"{settings_url}/test",
        data={
            "test-csrf_token": _csrf(saved.text),
            "test-recipient": "office-manager@example.org",
            "test-send": "Test",
        },
        timeout=30,
    )
    assert "Test e-mail sent to office-manager@example.org" in tested.text
    assert [m.rcpt_tos for m in mail_stack.sink.messages] == [["office-manager@example.org"]]
    assert mail_stack.sink[0].message["From"] == MAILBOX_USER
    assert mail_stack.sink[0].message["Reply-To"] == ADMIN

    # Mail arrives; then the connector is due and beat hands it to the worker.
    mail_stack.dovecot.deliver(
        MAILBOX_USER,
        message_with_files(
            "Two files for German and Czech",
            [("Leaflet.pdf", PDF_BYTES, "application/pdf"),
             ("Label text.docx", DOCX_BYTES, "application/octet-stream")],
        ),
    )  # fmt: skip
    mail_stack.dovecot.deliver(
        MAILBOX_USER, message_rfc2231(CZECH_NAME.encode(), DOCX_BYTES + b"cz")
    )
    mail_stack.dovecot.deliver(MAILBOX_USER, message_without_files())
    edit_url = f"{app.url}/configuration/integration/smart-connectors/{connector_id}/edit"
    edit_page = http.get(edit_url, timeout=10)
    activate = {key: value for key, value in form.items() if key != "generate_token"}
    activate.update({"csrf_token": _csrf(edit_page.text), "oauth_client_secret": "", "active": "y"})
    activate["save"] = "Save"
    activated = http.post(edit_url, data=activate, timeout=10)
    assert activated.status_code == 200
    with app.db.session() as session:
        assert session.get(Connector, connector_id).active is True

    def jobs_made() -> list[tuple[str, str, bytes]]:
        with app.db.session() as session:
            jobs = session.scalars(sa.select(Job).order_by(Job.id)).all()
            if len(jobs) < 3:
                return []
            rows = []
            for job in jobs:
                for stored in job.files:
                    path = (
                        Path(app.env["FILES_ROOT"])
                        / "jobs"
                        / stored.storage_name[:2]
                        / stored.storage_name
                    )
                    rows.append((job.name, stored.original_name, path.read_bytes()))
            return rows

    rows = _wait_for(jobs_made, WAIT_SECONDS, "beat and the worker to make three projects")
    assert rows == [
        ("Leaflet.pdf", "Leaflet.pdf", PDF_BYTES),
        ("Label text.docx", "Label text.docx", DOCX_BYTES),
        (CZECH_NAME, CZECH_NAME, DOCX_BYTES + b"cz"),
    ]
    remaining = mail_stack.dovecot.list_uids(MAILBOX_USER)
    assert len(remaining) == 1
    assert b"Just a question" in mail_stack.dovecot.fetch(MAILBOX_USER, remaining[0])

    projects = http.get(f"{app.url}/projects", timeout=10)
    assert "Leaflet.pdf" in projects.text
    assert "Překlad smlouvy" in projects.text

    # Another run, started from the page, finds only the e-mail without files.
    page = http.get(
        f"{app.url}/configuration/integration/smart-connectors/{connector_id}", timeout=10
    )
    run_now = http.post(
        f"{app.url}/configuration/integration/smart-connectors/{connector_id}/run",
        data={"csrf_token": _csrf(page.text)},
        timeout=10,
    )
    assert run_now.status_code == 200

    def manual_run_finished() -> bool:
        with app.db.session() as session:
            run = session.scalars(
                sa.select(ConnectorRun).where(ConnectorRun.trigger == "manual")
            ).first()
            return run is not None and run.status != RunStatus.RUNNING

    _wait_for(manual_run_finished, WAIT_SECONDS, "the manual run")
    with app.db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 3
        account = session.scalars(sa.select(MailAccount)).one()
        secrets = [
            OAUTH_CLIENT_SECRET,
            app.box.decrypt(account.access_token_encrypted),
            app.box.decrypt(account.refresh_token_encrypted),
        ]
    page = http.get(
        f"{app.url}/configuration/integration/smart-connectors/{connector_id}", timeout=10
    )
    assert "no attachments" in page.text

    # The outbox task tells the person responsible about each new project.
    def notifications_sent() -> list:  # type: ignore[type-arg]
        received = [m for m in mail_stack.sink.messages if m.rcpt_tos == [PERSON_RESPONSIBLE]]
        return received if len(received) >= 3 else []

    notices = _wait_for(notifications_sent, WAIT_SECONDS, "the project notifications")
    subjects = sorted(notice.message["Subject"].split(": ", 1)[1] for notice in notices)
    assert subjects == sorted(["Leaflet.pdf", "Label text.docx", CZECH_NAME])
    for notice in notices:
        assert notice.message["From"] == MAILBOX_USER
        assert notice.message["Reply-To"] in ("client@example.org", "jiri@example.org")

    for log in app.logs.iterdir():
        text = log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret appears in {log.name}"
    worker_log = (app.logs / "worker.log").read_text(errors="replace")
    assert f'"connector_id": {connector_id}' in worker_log
