"""Connector runs against a real Dovecot and the local OAuth server."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa

from config import Settings
from imapsession import MailboxSession
from intake import run_connector
from mailauth import ConsentRequired
from mailauth.consent import start_consent
from models import (
    Aggregation,
    AuthMethod,
    Client,
    Connector,
    ConnectorRun,
    Job,
    Language,
    LedgerState,
    MailAccount,
    ProcessedMessage,
    RunStatus,
    Service,
    Specialization,
    TokenStatus,
    User,
)
from web import create_app

from .conftest import make_settings
from .mailhelpers import (
    DOCX_BYTES,
    PDF_BYTES,
    give_consent,
    message_rfc2231,
    message_with_files,
    message_without_files,
)
from .servers import (
    MAILBOX_PASSWORD,
    MAILBOX_USER,
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    PASSWORD_USER,
    PASSWORD_USER_PASSWORD,
    MailStack,
)

CZECH_NAME = "Překlad smlouvy – příloha č. 1.docx"


@pytest.fixture
def stack(mail_stack: MailStack) -> MailStack:
    mail_stack.empty_folder(MAILBOX_USER)
    mail_stack.empty_folder(PASSWORD_USER)
    requests.post(f"{mail_stack.auth.url}/testing/reset-stats", timeout=5)
    return mail_stack


@pytest.fixture
def settings(tmp_path, redis_url, mail_stack: MailStack) -> Settings:  # type: ignore[override]
    return make_settings(
        tmp_path,
        redis_url,
        oauth_providers=mail_stack.provider_config(),
        ca_file=mail_stack.dovecot.ca_file,
        mail_timeout=3.0,
    )


def _make_connector(session, stack: MailStack, **changes) -> Connector:  # type: ignore[no-untyped-def]
    client = session.scalars(sa.select(Client).where(Client.name == "Northwind Pharma GmbH")).one()
    values = dict(
        name="Northwind intake",
        client=client,
        budget_code="NWP-2026",
        aggregation=Aggregation.SEPARATELY,
        auth_method=AuthMethod.OAUTH2,
        host="127.0.0.1",
        port=stack.dovecot.imaps_port,
        use_ssl=True,
        username=MAILBOX_USER,
        folder="INBOX",
        person_responsible=session.scalars(
            sa.select(User).where(User.email == "maria.lopez@example.com")
        ).one(),
        source_language=session.scalars(sa.select(Language).where(Language.code == "en")).one(),
        target_languages=list(
            session.scalars(sa.select(Language).where(Language.code.in_(["de", "cs"])))
        ),
        service=session.scalars(sa.select(Service).where(Service.name == "Translation")).one(),
        specialization=session.scalars(
            sa.select(Specialization).where(Specialization.name == "Pharmaceutical")
        ).one(),
        interval_minutes=5,
        next_run_at=datetime.now(UTC),
    )
    values.update(changes)
    connector = Connector(**values)
    session.add(connector)
    session.commit()
    return connector


def password_connector_id(services, stack: MailStack, name: str) -> int:  # type: ignore[no-untyped-def]
    """Add a password connector on the STARTTLS port, so no consent is needed."""
    with services.db.session() as session:
        connector = _make_connector(
            session,
            stack,
            name=name,
            auth_method=AuthMethod.PASSWORD,
            username=PASSWORD_USER,
            port=stack.dovecot.imap_port,
            use_ssl=False,
            password_encrypted=services.box.encrypt(PASSWORD_USER_PASSWORD),
        )
        return connector.id


def _consent(services, logged_in, stack: MailStack, account_id: int) -> None:  # type: ignore[no-untyped-def]
    """Run the real consent flow: authorization URL, consent page, callback view."""
    with logged_in.session_transaction() as browser_session:
        binding = browser_session["binding"]
        user_id = int(browser_session["_user_id"])
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        url = start_consent(
            session,
            account=account,
            provider=services.providers["local"],
            box=services.box,
            user_id=user_id,
            session_binding=binding,
            redirect_uri="http://localhost/home-api/authentication/mail/oauth2/code",
            return_to="/",
            now=datetime.now(UTC),
        )
        session.commit()
    query = dict(part.split("=", 1) for part in urlsplit(url).query.split("&"))
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) >= 40
    callback = give_consent(url, MAILBOX_USER, MAILBOX_PASSWORD)
    parts = urlsplit(callback)
    answer = logged_in.get(f"{parts.path}?{parts.query}")
    assert answer.status_code == 302, answer.text
    followed = logged_in.get(answer.headers["Location"])
    assert "OAuth2 Token was generated" in followed.text


@pytest.fixture
def oauth_connector(services, seeded, logged_in, stack: MailStack) -> int:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        account = MailAccount(
            provider="local",
            email=MAILBOX_USER,
            client_id=OAUTH_CLIENT_ID,
            client_secret_encrypted=services.box.encrypt(OAUTH_CLIENT_SECRET),
        )
        session.add(account)
        session.commit()
        connector = _make_connector(session, stack, mail_account=account)
        account_id, connector_id = account.id, connector.id
    _consent(services, logged_in, stack, account_id)
    return connector_id


def _jobs(session) -> list[Job]:  # type: ignore[no-untyped-def]
    return list(session.scalars(sa.select(Job).order_by(Job.id)))


def test_consent_stores_encrypted_token(services, oauth_connector: int) -> None:
    with services.db.session() as session:
        connector = session.get(Connector, oauth_connector)
        account = connector.mail_account
        assert account.token_status == TokenStatus.ACTIVE
        assert account.refresh_token_encrypted is not None
        token = services.box.decrypt(account.access_token_encrypted)
        assert token.encode() not in account.access_token_encrypted
        assert account.token_expires_at > datetime.now(UTC)


def test_callback_state_is_one_time(services, logged_in, seeded, stack: MailStack) -> None:
    with services.db.session() as session:
        account = MailAccount(
            provider="local",
            email=MAILBOX_USER,
            client_id=OAUTH_CLIENT_ID,
            client_secret_encrypted=services.box.encrypt(OAUTH_CLIENT_SECRET),
        )
        session.add(account)
        session.commit()
        account_id = account.id
    with logged_in.session_transaction() as browser_session:
        binding = browser_session["binding"]
    with services.db.session() as session:
        url = start_consent(
            session,
            account=session.get(MailAccount, account_id),
            provider=services.providers["local"],
            box=services.box,
            user_id=1,
            session_binding=binding,
            redirect_uri="http://localhost/home-api/authentication/mail/oauth2/code",
            return_to="/",
            now=datetime.now(UTC),
        )
        session.commit()
    callback = urlsplit(give_consent(url, MAILBOX_USER, MAILBOX_PASSWORD))
    first = logged_in.get(f"{callback.path}?{callback.query}", follow_redirects=True)
    assert "OAuth2 Token was generated" in first.text
    second = logged_in.get(f"{callback.path}?{callback.query}", follow_redirects=True)
    assert "already used or is unknown" in second.text


def test_run_turns_attachments_into_projects(services, oauth_connector: int, stack) -> None:
    stack.dovecot.deliver(
        MAILBOX_USER,
        message_with_files(
            "Two files for German and Czech",
            [
                ("Leaflet.pdf", PDF_BYTES, "application/pdf"),
                ("Label text.docx", DOCX_BYTES, "application/octet-stream"),
            ],
        ),
    )
    stack.dovecot.deliver(MAILBOX_USER, message_rfc2231(CZECH_NAME.encode(), DOCX_BYTES + b"cz"))
    stack.dovecot.deliver(MAILBOX_USER, message_without_files())

    outcome = run_connector(services.intake_context(), oauth_connector, "manual")

    assert outcome is not None
    assert outcome.status == RunStatus.PARTIAL
    assert outcome.messages_seen == 3
    assert outcome.jobs_created == 3
    assert outcome.messages_deleted == 2
    with services.db.session() as session:
        jobs = _jobs(session)
        assert [job.name for job in jobs] == ["Leaflet.pdf", "Label text.docx", CZECH_NAME]
        expected = {
            "Leaflet.pdf": PDF_BYTES,
            "Label text.docx": DOCX_BYTES,
            CZECH_NAME: DOCX_BYTES + b"cz",
        }
        for job in jobs:
            assert job.client.name == "Northwind Pharma GmbH"
            assert job.budget_code == "NWP-2026"
            assert job.source_language.code == "en"
            assert sorted(lang.code for lang in job.target_languages) == ["cs", "de"]
            assert job.service.name == "Translation"
            assert job.specialization.name == "Pharmaceutical"
            assert job.person_responsible.email == "maria.lopez@example.com"
            assert len(job.files) == 1
            stored = job.files[0]
            data = services.store.path(stored.storage_name).read_bytes()
            assert data == expected[stored.original_name]
            assert stored.sha256 == hashlib.sha256(data).hexdigest()
            assert stored.storage_name != stored.original_name
        assert jobs[2].source_subject == "Překlad smlouvy"
        assert jobs[2].source_sender == "Jiří Novák <jiri@example.org>"
        run = session.scalars(sa.select(ConnectorRun)).one()
        assert [p.subject for p in run.problems] == ["Just a question"]
        assert "no attachments" in run.problems[0].reason
    remaining = stack.dovecot.list_uids(MAILBOX_USER)
    assert len(remaining) == 1
    assert b"Just a question" in stack.dovecot.fetch(MAILBOX_USER, remaining[0])

    again = run_connector(services.intake_context(), oauth_connector, "manual")
    assert again is not None
    assert again.jobs_created == 0
    with services.db.session() as session:
        assert len(_jobs(session)) == 3


def test_batch_aggregation_makes_one_job(services, oauth_connector: int, stack) -> None:
    with services.db.session() as session:
        session.get(Connector, oauth_connector).aggregation = Aggregation.BATCH
        session.commit()
    for number in range(3):
        stack.dovecot.deliver(
            MAILBOX_USER,
            message_with_files(
                f"Part {number}", [(f"part-{number}.pdf", PDF_BYTES, "application/pdf")]
            ),
        )
    outcome = run_connector(services.intake_context(), oauth_connector, "schedule")
    assert outcome is not None
    assert outcome.jobs_created == 1
    with services.db.session() as session:
        job = session.scalars(sa.select(Job)).one()
        assert [f.original_name for f in job.files] == ["part-0.pdf", "part-1.pdf", "part-2.pdf"]
        ledger = session.scalars(sa.select(ProcessedMessage)).all()
        assert {row.job_id for row in ledger} == {job.id}
        assert {row.state for row in ledger} == {LedgerState.DELETED}
    assert stack.dovecot.list_uids(MAILBOX_USER) == []


def test_interrupted_delete_finishes_without_second_job(
    services, oauth_connector: int, stack, monkeypatch
) -> None:
    stack.dovecot.deliver(
        MAILBOX_USER, message_with_files("Crash test", [("a.pdf", PDF_BYTES, "application/pdf")])
    )
    real_delete = MailboxSession.delete

    def crash(self, uids, trash_folder=None):  # type: ignore[no-untyped-def]
        raise ConnectionResetError("connection lost after the commit")

    monkeypatch.setattr(MailboxSession, "delete", crash)
    with pytest.raises(ConnectionResetError):
        run_connector(services.intake_context(), oauth_connector, "schedule")
    assert len(stack.dovecot.list_uids(MAILBOX_USER)) == 1
    with services.db.session() as session:
        assert len(_jobs(session)) == 1
        assert session.scalars(sa.select(ProcessedMessage)).one().state == LedgerState.COMMITTED

    monkeypatch.setattr(MailboxSession, "delete", real_delete)
    outcome = run_connector(services.intake_context(), oauth_connector, "schedule")
    assert outcome is not None
    assert outcome.jobs_created == 0
    assert outcome.messages_deleted == 1
    assert stack.dovecot.list_uids(MAILBOX_USER) == []
    with services.db.session() as session:
        assert len(_jobs(session)) == 1
        assert session.scalars(sa.select(ProcessedMessage)).one().state == LedgerState.DELETED


def test_same_message_after_uidvalidity_change_is_not_repeated(
    services, oauth_connector: int, stack
) -> None:
    raw = message_with_files("Resent", [("again.pdf", PDF_BYTES, "application/pdf")])
    stack.dovecot.append_many(MAILBOX_USER, [raw], "INBOX")
    assert run_connector(services.intake_context(), oauth_connector, "schedule").jobs_created == 1
    with services.db.session() as session:
        # Pretend the jobs were made under an older UIDVALIDITY of the folder.
        session.execute(sa.update(ProcessedMessage).values(uidvalidity=1, uid=999_999))
        session.commit()
    stack.dovecot.append_many(MAILBOX_USER, [raw], "INBOX")
    outcome = run_connector(services.intake_context(), oauth_connector, "schedule")
    assert outcome is not None
    assert outcome.jobs_created == 0
    assert outcome.messages_deleted == 1
    with services.db.session() as session:
        assert len(_jobs(session)) == 1


def test_expired_token_is_refreshed_and_rotated(services, oauth_connector: int, stack) -> None:
    with services.db.session() as session:
        account = session.get(Connector, oauth_connector).mail_account
        old_refresh = services.box.decrypt(account.refresh_token_encrypted)
        account.token_expires_at = datetime.now(UTC) + timedelta(seconds=30)
        session.commit()
    stack.dovecot.deliver(
        MAILBOX_USER, message_with_files("Refresh", [("r.pdf", PDF_BYTES, "application/pdf")])
    )
    outcome = run_connector(services.intake_context(), oauth_connector, "schedule")
    assert outcome is not None
    assert outcome.status == RunStatus.SUCCEEDED
    stats = requests.get(f"{stack.auth.url}/testing/stats", timeout=5).json()
    assert stats["token_requests"]["refresh_token"] == 1
    with services.db.session() as session:
        account = session.get(Connector, oauth_connector).mail_account
        assert services.box.decrypt(account.refresh_token_encrypted) != old_refresh
        assert account.token_expires_at > datetime.now(UTC) + timedelta(minutes=30)


def test_concurrent_refreshes_make_one_token_request(services, oauth_connector: int, stack) -> None:
    with services.db.session() as session:
        account = session.get(Connector, oauth_connector).mail_account
        account.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        account_id = account.id
        session.commit()
    tokens: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def worker() -> None:
        barrier.wait()
        try:
            tokens.append(services.tokens.access_token(account_id))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(set(tokens)) == 1
    stats = requests.get(f"{stack.auth.url}/testing/stats", timeout=5).json()
    assert stats["token_requests"]["refresh_token"] == 1


def test_revoked_grant_marks_account_for_consent(services, oauth_connector: int, stack) -> None:
    requests.post(f"{stack.auth.url}/testing/revoke", json={"username": MAILBOX_USER}, timeout=5)
    outcome = run_connector(services.intake_context(), oauth_connector, "schedule")
    assert outcome is not None
    assert outcome.status == RunStatus.FAILED
    assert "Generate new token" in outcome.error
    with services.db.session() as session:
        account = session.get(Connector, oauth_connector).mail_account
        assert account.token_status == TokenStatus.NEEDS_CONSENT
    with pytest.raises(ConsentRequired):
        services.tokens.access_token(account.id)


def test_password_connector_over_starttls(services, seeded, stack) -> None:
    connector_id = password_connector_id(services, stack, "Northwind intake")
    stack.dovecot.deliver(
        PASSWORD_USER, message_with_files("By password", [("p.pdf", PDF_BYTES, "application/pdf")])
    )
    outcome = run_connector(services.intake_context(), connector_id, "manual")
    assert outcome is not None
    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    assert outcome.jobs_created == 1
    assert stack.dovecot.list_uids(PASSWORD_USER) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"port": "closed"}, "Nothing accepts connections at 127.0.0.1:"),
        ({"port": "imap", "use_ssl": True}, "does not speak implicit TLS"),
        ({"port": "imaps", "use_ssl": False}, "tick Use SSL"),
        ({"folder": "Orders"}, "Folder 'Orders' cannot be opened"),
        (
            {"password": "wrong password"},
            "rejected the Username or password for 'office@example.com'",
        ),
        ({"host": "no-such-host.invalid"}, "Host Name 'no-such-host.invalid' cannot be resolved"),
    ],
)
def test_bad_settings_name_the_problem(services, seeded, stack, change, expected) -> None:
    ports = {"imap": stack.dovecot.imap_port, "imaps": stack.dovecot.imaps_port}
    values = dict(change)
    if values.get("port") == "closed":
        from .servers import free_port

        values["port"] = free_port()
    elif "port" in values:
        values["port"] = ports[values["port"]]
    password = values.pop("password", PASSWORD_USER_PASSWORD)
    with services.db.session() as session:
        connector = _make_connector(
            session,
            stack,
            auth_method=AuthMethod.PASSWORD,
            username=PASSWORD_USER,
            password_encrypted=services.box.encrypt(password),
            **values,
        )
        connector_id = connector.id
    outcome = run_connector(services.intake_context(), connector_id, "manual")
    assert outcome is not None
    assert outcome.status == RunStatus.FAILED
    assert expected in outcome.error


def test_untrusted_certificate_is_rejected(tmp_path, redis_url, seeded, stack) -> None:
    app = create_app(make_settings(tmp_path / "other", redis_url, mail_timeout=3.0))
    services = app.extensions["mailroom"]
    import migrations
    from referencedata import seed

    migrations.upgrade(services.settings.database_url)
    with services.db.session() as session:
        seed(session)
        connector = _make_connector(
            session,
            stack,
            auth_method=AuthMethod.PASSWORD,
            username=PASSWORD_USER,
            password_encrypted=services.box.encrypt(PASSWORD_USER_PASSWORD),
        )
        connector_id = connector.id
    outcome = run_connector(services.intake_context(), connector_id, "manual")
    assert outcome is not None
    assert "is not trusted" in outcome.error
