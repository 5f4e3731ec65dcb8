"""Sending e-mail and the token lifecycle, against Dovecot submission and a replay server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from config import Settings
from devservers.certs import make_certificate
from mailauth import ClientConfigError, ConsentRequired, TemporaryTokenError
from models import (
    Branch,
    ConnectionType,
    MailAccount,
    OutboxMessage,
    OutboxStatus,
    SmtpAuthMethod,
    SmtpSettings,
    TokenStatus,
)
from outgoing import PermanentSendError, SendError, SmtpEndpoint, TemporarySendError, parse_server
from outgoing.outbox import deliver, enqueue

from .conftest import make_settings
from .mailhelpers import consent_directly
from .servers import (
    MAILBOX_PASSWORD,
    MAILBOX_USER,
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    PASSWORD_USER,
    PASSWORD_USER_PASSWORD,
    MailStack,
    free_port,
)
from .smtp_servers import ReplayServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(tmp_path, redis_url, mail_stack: MailStack) -> Settings:  # type: ignore[override]
    return make_settings(
        tmp_path,
        redis_url,
        oauth_providers=mail_stack.provider_config(),
        ca_file=mail_stack.dovecot.ca_file,
        mail_timeout=3.0,
    )


@pytest.fixture(autouse=True)
def _flask_mail_context(app_context) -> None:  # type: ignore[no-untyped-def]
    """Flask-Mail builds messages from the current app's settings."""


@pytest.fixture
def stack(mail_stack: MailStack) -> MailStack:
    mail_stack.sink.clear()
    requests.post(f"{mail_stack.auth.url}/testing/reset-stats", timeout=5)
    return mail_stack


@pytest.fixture(scope="module")
def replay(tmp_path_factory):  # type: ignore[no-untyped-def]
    cert = make_certificate(tmp_path_factory.mktemp("replay-cert"))
    server = ReplayServer(0, str(cert.cert), str(cert.key)).start()
    server.ca_file = cert.ca
    yield server
    server.stop()


def _oauth_account(services, admin, stack: MailStack) -> int:  # type: ignore[no-untyped-def]
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
    consent_directly(services, account_id, admin.id, MAILBOX_USER, MAILBOX_PASSWORD)
    return account_id


def _company_smtp(session, **values) -> SmtpSettings:  # type: ignore[no-untyped-def]
    row = SmtpSettings(branch_id=None, **values)
    session.add(row)
    session.commit()
    return row


def test_oauth2_submission_delivers_with_reply_to(services, admin, stack: MailStack) -> None:
    account_id = _oauth_account(services, admin, stack)
    with services.db.session() as session:
        settings = _company_smtp(
            session,
            auth_method=SmtpAuthMethod.OAUTH2,
            host="127.0.0.1",
            port=stack.dovecot.submission_port,
            email_address=MAILBOX_USER,
            connection_type=ConnectionType.TLS,
            mail_account_id=account_id,
        )
        services.mailer.send(
            session, settings, recipients=["pm@example.org"], subject="Projekt übernommen",
            body="Grüße aus dem Mailroom.\n", reply_to="maria.lopez@example.com",
        )  # fmt: skip
    assert len(stack.sink) == 1
    received = stack.sink[0]
    assert received.mail_from == MAILBOX_USER
    assert received.rcpt_tos == ["pm@example.org"]
    message = received.message
    assert message["From"] == MAILBOX_USER
    assert message["Reply-To"] == "maria.lopez@example.com"
    assert message["Subject"] == "Projekt übernommen"
    assert message.get_content().replace("\r\n", "\n") == "Grüße aus dem Mailroom.\n"


def test_password_submission_over_implicit_tls(services, stack: MailStack) -> None:
    with services.db.session() as session:
        settings = _company_smtp(
            session,
            auth_method=SmtpAuthMethod.PASSWORD,
            host="127.0.0.1",
            port=stack.dovecot.submissions_port,
            email_address=PASSWORD_USER,
            login=PASSWORD_USER,
            password_encrypted=services.box.encrypt(PASSWORD_USER_PASSWORD),
            connection_type=ConnectionType.SSL,
        )
        services.mailer.send(session, settings, recipients=["a@example.org"], subject="s", body="b")
    assert [m.mail_from for m in stack.sink.messages] == [PASSWORD_USER]


@pytest.mark.parametrize(
    ("connection_type", "port_name", "expected", "error_class"),
    [
        (ConnectionType.SSL, "submission_port", "does not speak implicit TLS", PermanentSendError),
        (ConnectionType.TLS, "submissions_port", "choose Connection Type SSL", TemporarySendError),
        (
            ConnectionType.TLS,
            "closed",
            "Nothing accepts connections at 127.0.0.1:",
            TemporarySendError,
        ),
    ],
)
def test_wrong_connection_settings(
    services, stack: MailStack, connection_type, port_name, expected, error_class
) -> None:
    port = free_port() if port_name == "closed" else getattr(stack.dovecot, port_name)
    with services.db.session() as session:
        settings = _company_smtp(
            session, auth_method=SmtpAuthMethod.PASSWORD, host="127.0.0.1", port=port,
            email_address=PASSWORD_USER, login=PASSWORD_USER,
            password_encrypted=services.box.encrypt(PASSWORD_USER_PASSWORD),
            connection_type=connection_type,
        )  # fmt: skip
        with pytest.raises(error_class) as error:
            services.mailer.send(
                session, settings, recipients=["a@example.org"], subject="s", body="b"
            )
    assert expected in str(error.value)


def test_bad_password_and_untrusted_certificate(services, stack: MailStack, tmp_path) -> None:
    with services.db.session() as session:
        settings = _company_smtp(
            session, auth_method=SmtpAuthMethod.PASSWORD, host="127.0.0.1",
            port=stack.dovecot.submission_port, email_address=PASSWORD_USER, login=PASSWORD_USER,
            password_encrypted=services.box.encrypt("wrong"), connection_type=ConnectionType.TLS,
        )  # fmt: skip
        with pytest.raises(PermanentSendError, match="rejected the login 'office@example.com'"):
            services.mailer.send(
                session, settings, recipients=["a@example.org"], subject="s", body="b"
            )

    from outgoing import send_bytes

    endpoint = SmtpEndpoint("127.0.0.1", stack.dovecot.submissions_port, ConnectionType.SSL, 3.0)
    with pytest.raises(PermanentSendError, match="is not trusted"):
        send_bytes(endpoint, sender=PASSWORD_USER, recipients=["a@example.org"], message=b"x")


def test_no_secret_over_plain_text(services) -> None:
    from outgoing import send_bytes

    endpoint = SmtpEndpoint("127.0.0.1", 25, ConnectionType.NOT_SECURED, 3.0)
    with pytest.raises(PermanentSendError, match="never sends a password or token without TLS"):
        send_bytes(endpoint, sender="a@example.com", recipients=["b@example.com"], message=b"x",
                   login="a@example.com", password="secret")  # fmt: skip


REPLAYED = [
    (
        {"auth": "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
                 "for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."},
        PermanentSendError,
        "Authenticated SMTP is disabled for the mailbox or the tenant",
    ),
    (
        {"data": ["554 5.2.252 SendAsDenied; office@example.com not allowed to send as "
                  "ceo@example.com; STOREDRV.Submission.Exception:SendAsDeniedException"]},
        PermanentSendError,
        "is not allowed to send as the sender address",
    ),
    (
        {"mail": "550 5.4.5 Daily user sending limit exceeded. For more information on Gmail "
                 "sending limits go to https://support.google.com/a/answer/166852"},
        TemporarySendError,
        "daily sending limit is reached",
    ),
    (
        {"mail": "454 4.7.0 Temporary authentication failure"},
        TemporarySendError,
        "will retry",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("answers", "error_class", "expected"), REPLAYED)
def test_provider_answers_in_plain_words(services, replay, answers, error_class, expected) -> None:
    replay.reset(**answers)
    mailer = services.mailer
    with services.db.session() as session:
        settings = _company_smtp(
            session, auth_method=SmtpAuthMethod.PASSWORD, host="127.0.0.1", port=replay.port,
            email_address="office@example.com", login="office@example.com",
            password_encrypted=services.box.encrypt("pw"), connection_type=ConnectionType.SSL,
        )  # fmt: skip
        original = mailer.ca_file
        mailer.ca_file = replay.ca_file
        try:
            with pytest.raises(error_class) as error:
                mailer.send(session, settings, recipients=["a@example.org"], subject="s", body="b")
        finally:
            mailer.ca_file = original
    assert expected in str(error.value)


def test_outbox_retries_once_and_delivers_once(app, services, replay) -> None:
    replay.reset(data=["451 4.3.0 Mail server temporarily rejected message"])
    services.mailer.ca_file = replay.ca_file
    with services.db.session() as session:
        _company_smtp(
            session, auth_method=SmtpAuthMethod.PASSWORD, host="127.0.0.1", port=replay.port,
            email_address="office@example.com", login="office@example.com",
            password_encrypted=services.box.encrypt("pw"), connection_type=ConnectionType.SSL,
        )  # fmt: skip
        row = enqueue(session, event="test", recipients=["pm@example.org"], subject="Hi", body="b")
        session.commit()
        row_id = row.id

    def send(row: OutboxMessage) -> None:
        with services.db.session() as inner:
            services.mailer.send_outbox_row(inner, row)

    with services.db.session() as session:
        first = deliver(session, row_id, send)
    assert first.status == OutboxStatus.PENDING
    assert "451" in first.error
    with services.db.session() as session:
        # Not due yet: a second worker must not send it early.
        assert deliver(session, row_id, send) is None
        row = session.get(OutboxMessage, row_id)
        assert row.next_attempt_at > datetime.now(UTC)
        row.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)
        session.commit()

    results = []

    def worker() -> None:
        with app.app_context(), services.db.session() as session:
            results.append(deliver(session, row_id, send))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.status for r in results if r is not None] == [OutboxStatus.SENT]
    assert len(replay.script.delivered) == 1
    with services.db.session() as session:
        row = session.get(OutboxMessage, row_id)
        assert row.status == OutboxStatus.SENT
        assert row.attempts == 2


def test_permanent_failure_marks_row_failed(services, replay) -> None:
    replay.reset(data=["554 5.2.252 SendAsDenied; not allowed"])
    services.mailer.ca_file = replay.ca_file
    with services.db.session() as session:
        _company_smtp(
            session, auth_method=SmtpAuthMethod.PASSWORD, host="127.0.0.1", port=replay.port,
            email_address="office@example.com", login="office@example.com",
            password_encrypted=services.box.encrypt("pw"), connection_type=ConnectionType.SSL,
        )  # fmt: skip
        row = enqueue(session, event="test", recipients=["pm@example.org"], subject="Hi", body="b")
        session.commit()
        row_id = row.id
        result = deliver(session, row_id, lambda r: services.mailer.send_outbox_row(session, r))
    assert result.status == OutboxStatus.FAILED
    assert "not allowed to send as" in result.error


def test_expired_token_is_refreshed_for_smtp(services, admin, stack: MailStack) -> None:
    account_id = _oauth_account(services, admin, stack)
    requests.post(f"{stack.auth.url}/testing/expire", json={"username": MAILBOX_USER}, timeout=5)
    with services.db.session() as session:
        settings = _company_smtp(
            session, auth_method=SmtpAuthMethod.OAUTH2, host="127.0.0.1",
            port=stack.dovecot.submission_port, email_address=MAILBOX_USER,
            connection_type=ConnectionType.TLS, mail_account_id=account_id,
        )  # fmt: skip
        # The stored token looks valid for an hour, but the server has expired it.
        services.mailer.send(session, settings, recipients=["a@example.org"], subject="s", body="b")
    stats = requests.get(f"{stack.auth.url}/testing/stats", timeout=5).json()
    assert stats["token_requests"]["refresh_token"] == 1
    assert len(stack.sink) == 1


def test_invalid_grant_needs_consent_and_notifies_once(services, admin, stack: MailStack) -> None:
    account_id = _oauth_account(services, admin, stack)
    requests.post(f"{stack.auth.url}/testing/revoke", json={"username": MAILBOX_USER}, timeout=5)
    for _ in range(2):
        with pytest.raises(ConsentRequired, match="invalid_grant"):
            services.tokens.access_token(
                account_id, rejected=_stored_access_token(services, account_id)
            )
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        assert account.token_status == TokenStatus.NEEDS_CONSENT
        assert "Generate new token" in account.token_status_reason
        notices = session.scalars(
            sa.select(OutboxMessage).where(OutboxMessage.event == "token_needs_consent")
        ).all()
    assert len(notices) == 1
    assert notices[0].recipients == admin.email
    assert notices[0].about_account_id == account_id


def _stored_access_token(services, account_id: int) -> str:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        return services.box.decrypt(account.access_token_encrypted)


def test_invalid_client_needs_the_admin(services, admin, stack: MailStack) -> None:
    account_id = _oauth_account(services, admin, stack)
    requests.post(
        f"{stack.auth.url}/testing/invalid-client",
        json={"client_id": OAUTH_CLIENT_ID, "enabled": True},
        timeout=5,
    )
    try:
        with pytest.raises(ClientConfigError, match="Client Secret"):
            services.tokens.access_token(
                account_id, rejected=_stored_access_token(services, account_id)
            )
    finally:
        requests.post(
            f"{stack.auth.url}/testing/invalid-client",
            json={"client_id": OAUTH_CLIENT_ID, "enabled": False},
            timeout=5,
        )
    with services.db.session() as session:
        assert session.get(MailAccount, account_id).token_status == TokenStatus.CLIENT_ERROR


def test_server_error_is_temporary(services, admin, stack: MailStack) -> None:
    account_id = _oauth_account(services, admin, stack)
    requests.post(
        f"{stack.auth.url}/testing/fail-next", json={"status": 503, "count": 1}, timeout=5
    )
    with pytest.raises(TemporaryTokenError, match="will retry"):
        services.tokens.access_token(
            account_id, rejected=_stored_access_token(services, account_id)
        )
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        assert account.token_status == TokenStatus.ACTIVE
        assert "will retry" in account.last_refresh_outcome
    # The next attempt goes through: consent was never lost.
    assert services.tokens.check(account_id, timedelta(0)) == "ok"


def test_refresh_without_new_refresh_token_keeps_old(services, admin, stack: MailStack) -> None:
    from mailauth.tokens import store_token

    account_id = _oauth_account(services, admin, stack)
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        before = account.refresh_token_encrypted
        store_token(
            account, {"access_token": "new", "expires_in": 60}, services.box, datetime.now(UTC)
        )
        assert account.refresh_token_encrypted == before
        store_token(
            account, {"access_token": "n2", "refresh_token": "r2"}, services.box, datetime.now(UTC)
        )
        assert services.box.decrypt(account.refresh_token_encrypted) == "r2"
        assert account.token_expires_at is None


# Refreshes one account's token and dies by SIGKILL right after the commit
# that stores the response: no cleanup, no further statement runs.
KILL_AFTER_COMMIT = """
import os, signal, sys
from sqlalchemy import event
from config import load_settings
from runtime import build_services

services = build_services(load_settings())
event.listen(
    services.db.sessionmaker, "after_commit", lambda session: os.kill(os.getpid(), signal.SIGKILL)
)
services.tokens.access_token(int(sys.argv[1]))
"""


def test_rotated_refresh_token_survives_killed_worker(
    services, admin, stack: MailStack, settings
) -> None:
    account_id = _oauth_account(services, admin, stack)
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        account.token_expires_at = datetime.now(UTC)
        old_refresh = services.box.decrypt(account.refresh_token_encrypted)
        session.commit()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key,
        "ENCRYPTION_KEYS": ",".join(settings.encryption_keys),
        "OAUTH_PROVIDERS": json.dumps(settings.oauth_providers),
        "FILES_ROOT": str(settings.files_root),
        # Short, so the refresh lock the killed child leaves behind lapses soon.
        "HTTP_TIMEOUT": "2",
    }
    child = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_COMMIT, str(account_id)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        rotated = services.box.decrypt(account.refresh_token_encrypted)
    assert rotated != old_refresh
    # The old refresh token is revoked at the server; the stored one is live.
    # The check waits until the dead child's refresh lock expires.
    assert services.tokens.check(account_id, timedelta(0)) == "ok"
    stats = requests.get(f"{stack.auth.url}/testing/stats", timeout=5).json()
    assert stats["token_requests"]["refresh_token"] == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("smtp.example.com", "has no port; write it as host:port"),
        ("smtp.example.com:0", "port '0' is not a port number"),
        ("smtp.example.com:smtp", "port 'smtp' is not a port number"),
        ("smtp example.com:587", "is not a host name"),
    ],
)
def test_parse_server_errors(value, message) -> None:
    with pytest.raises(ValueError) as error:
        parse_server(value)
    assert message in str(error.value)


def test_parse_server_accepts_host_and_port() -> None:
    assert parse_server(" smtp.office365.com:587 ") == ("smtp.office365.com", 587)
    assert parse_server("[::1]:465") == ("::1", 465)


def test_send_error_is_exception() -> None:
    assert issubclass(TemporarySendError, SendError)


def test_health_check_task_records_outcome(services, admin, stack: MailStack) -> None:
    from tasks.tokens import check_health

    account_id = _oauth_account(services, admin, stack)
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        account.last_refresh_at = datetime.now(UTC) - timedelta(days=2)
        session.commit()
    assert check_health() == {str(account_id): "ok"}
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        assert account.last_refresh_outcome == "ok"
        assert account.last_refresh_at > datetime.now(UTC) - timedelta(minutes=1)
    # A fresh token is left alone: no second refresh within the day.
    assert check_health() == {str(account_id): "ok"}
    stats = requests.get(f"{stack.auth.url}/testing/stats", timeout=5).json()
    assert stats["token_requests"]["refresh_token"] == 1


def test_consent_notice_avoids_the_failing_account(services, admin, stack: MailStack) -> None:
    from outgoing.mailer import working_settings

    account_id = _oauth_account(services, admin, stack)
    with services.db.session() as session:
        _company_smtp(
            session, auth_method=SmtpAuthMethod.OAUTH2, host="127.0.0.1",
            port=stack.dovecot.submission_port, email_address=MAILBOX_USER,
            connection_type=ConnectionType.TLS, mail_account_id=account_id,
        )  # fmt: skip
        # The company's only channel is the failing account: no working channel.
        assert working_settings(session, account_id) is None
        branch_settings = SmtpSettings(
            branch=Branch(name="Prague", use_own_smtp=True),
            auth_method=SmtpAuthMethod.PASSWORD, host="127.0.0.1",
            port=stack.dovecot.submission_port, email_address=PASSWORD_USER, login=PASSWORD_USER,
            password_encrypted=services.box.encrypt(PASSWORD_USER_PASSWORD),
            connection_type=ConnectionType.TLS,
        )  # fmt: skip
        session.add(branch_settings)
        session.commit()
        assert working_settings(session, account_id).id == branch_settings.id
    requests.post(f"{stack.auth.url}/testing/revoke", json={"username": MAILBOX_USER}, timeout=5)
    with pytest.raises(ConsentRequired):
        services.tokens.access_token(
            account_id, rejected=_stored_access_token(services, account_id)
        )
    with services.db.session() as session:
        notice = session.scalars(sa.select(OutboxMessage)).one()
        result = deliver(
            session, notice.id, lambda row: services.mailer.send_outbox_row(session, row)
        )
    assert result.status == OutboxStatus.SENT
    assert [m.mail_from for m in stack.sink.messages] == [PASSWORD_USER]
    assert stack.sink[0].rcpt_tos == [admin.email]
