"""Tests of the Dovecot harness (devservers.dovecot) and its certificates (devservers.certs).

The Dovecot tests start a real Dovecot on 127.0.0.1 and talk to it with imaplib and
smtplib. XOAUTH2 and OAUTHBEARER tokens come from the local OAuth server
(devservers.oauth_server), which Dovecot queries through RFC 7662 introspection, and
submission relays to an aiosmtpd sink. Without a dovecot binary the Dovecot tests
are skipped, unless the CI environment variable is set, where they fail.
"""

from __future__ import annotations

import base64
import datetime
import gc
import hashlib
import imaplib
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import smtplib
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from devservers import dovecot as dovecot_module
from devservers.certs import make_certificate
from devservers.dovecot import Dovecot, DovecotError, find_dovecot
from devservers.oauth_server import AuthServer, AuthServerConfig, ClientSpec

ALICE = "alice@example.test"
ALICE_PASSWORD = "alice: a password with spaces and a colon"
CAROL = "carol@example.test"
CAROL_PASSWORD = "carol-oauth-password"
CLIENT_ID = "mailroom"
CLIENT_SECRET = "mailroom-client-secret"
REDIRECT_URI = "http://127.0.0.1:5000/oauth2/callback"
INTROSPECTION_CLIENT = ("dovecot", "dovecot-introspection-secret")
TIMEOUT = 10.0


# Fixtures


@pytest.fixture(scope="session")
def dovecot_binary() -> str:
    binary = find_dovecot()
    if binary is None:
        message = (
            "dovecot binary not found; install dovecot-core dovecot-imapd "
            "dovecot-submissiond dovecot-lmtpd"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[AuthServer]:
    config = AuthServerConfig(
        users={CAROL: CAROL_PASSWORD, ALICE: "alice-oauth-password"},
        clients=[ClientSpec(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])],
        introspection_clients=dict([INTROSPECTION_CLIENT]),
    )
    with AuthServer(config) as server:
        yield server


@dataclass
class RecordingHandler:
    """aiosmtpd handler that keeps every envelope it receives."""

    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 Message accepted"


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[tuple[RecordingHandler, int]]:
    handler = RecordingHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def server(
    dovecot_binary: str,
    tmp_path_factory: pytest.TempPathFactory,
    oauth_server: AuthServer,
    smtp_sink: tuple[RecordingHandler, int],
) -> Iterator[Dovecot]:
    introspection_id, introspection_secret = INTROSPECTION_CLIENT
    introspection_url = (
        f"http://{introspection_id}:{introspection_secret}@"
        f"{oauth_server.host}:{oauth_server.port}/introspect"
    )
    harness = Dovecot(
        tmp_path_factory.mktemp("dovecot"),
        introspection_url=introspection_url,
        password_users={ALICE: ALICE_PASSWORD},
        relay=("127.0.0.1", smtp_sink[1]),
    )
    with harness:
        yield harness


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # A proxy from the environment must not see loopback calls.
        yield session


# Helpers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _unique_user(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.test"


def _obtain_token(oauth: AuthServer, http: requests.Session, user: str, password: str) -> str:
    """Run the authorization code flow with PKCE and return the access token."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    authorization = http.post(
        oauth.authorization_url,
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "scope": "https://mail.example.test/",
            "state": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        data={"email": user, "password": password, "action": "allow"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert authorization.status_code == 302, authorization.text
    code = parse_qs(urlsplit(authorization.headers["Location"]).query)["code"][0]

    token = http.post(
        oauth.token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        timeout=TIMEOUT,
    )
    assert token.status_code == 200, token.text
    return token.json()["access_token"]


def _expire_tokens(oauth: AuthServer, http: requests.Session, user: str) -> None:
    response = http.post(f"{oauth.url}/testing/expire", json={"username": user}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["expired"] >= 1


def _sasl_callback(initial: str, challenges: list[bytes]) -> Callable[[bytes], bytes]:
    """Return an imaplib authenticator that sends `initial` and then an empty response.

    A failed OAuth login gets a continuation with an error JSON, and the client must
    then send an empty response. The decoded continuations are appended to `challenges`.
    """
    calls = 0

    def respond(challenge: bytes) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            return initial.encode()
        challenges.append(challenge)
        return b""

    return respond


def _xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def _oauthbearer(user: str, token: str) -> str:
    return f"n,a={user},\x01auth=Bearer {token}\x01\x01"


def _imaps(server: Dovecot, context: ssl.SSLContext | None = None) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL(
        server.host,
        server.imaps_port,
        ssl_context=context or server.ssl_context(),
        timeout=TIMEOUT,
    )


def _message(subject: str, body: str = "Hello from the test.") -> bytes:
    return (
        f"From: sender@example.test\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@example.test>\r\n\r\n{body}\r\n"
    ).encode()


# Certificates


def test_certificate_verifies_for_localhost_and_loopback(tmp_path: Path) -> None:
    paths = make_certificate(tmp_path)
    authority = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    chain = x509.load_pem_x509_certificates(paths.cert.read_bytes())
    leaf = chain[0]

    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = PolicyBuilder().store(Store([authority])).build_server_verifier(name)
        verified = verifier.verify(leaf, chain[1:])
        assert verified[-1] == authority

    now = datetime.datetime.now(datetime.UTC)
    assert leaf.not_valid_before_utc <= now - datetime.timedelta(hours=23)
    assert leaf.not_valid_after_utc >= now + datetime.timedelta(days=28)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert paths.key.stat().st_mode & 0o777 == 0o600


def test_certificate_rejected_for_other_names(tmp_path: Path) -> None:
    paths = make_certificate(tmp_path)
    authority = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    leaf = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    verifier = (
        PolicyBuilder()
        .store(Store([authority]))
        .build_server_verifier(x509.DNSName("mail.example.test"))
    )

    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(leaf, [])


# Password logins and TLS


def test_imaps_password_login(server: Dovecot) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with _imaps(server, context) as imap:
        status, _ = imap.login(ALICE, ALICE_PASSWORD)

        assert status == "OK"
        assert imap.state == "AUTH"
        assert isinstance(imap.sock, ssl.SSLSocket)
        assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")


def test_imaps_certificate_passes_strict_checks(server: Dovecot) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    with (
        socket.create_connection((server.host, server.imaps_port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        greeting = tls.recv(100)

    assert greeting.startswith(b"* OK")


def test_starttls_on_imap_port(server: Dovecot) -> None:
    with imaplib.IMAP4(server.host, server.imap_port, timeout=TIMEOUT) as imap:
        assert "STARTTLS" in imap.capabilities

        status, _ = imap.starttls(server.ssl_context())
        assert status == "OK"
        status, _ = imap.login(ALICE, ALICE_PASSWORD)
        assert status == "OK"


def test_wrong_password_rejected(server: Dovecot) -> None:
    with _imaps(server) as imap, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(ALICE, "not the password")

        status, _ = imap.login(ALICE, ALICE_PASSWORD)
        assert status == "OK"


def test_unknown_user_rejected(server: Dovecot) -> None:
    with _imaps(server) as imap, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login("nobody-here@example.test", ALICE_PASSWORD)


def test_client_without_ca_rejected(server: Dovecot) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _imaps(server, ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(
            server.host,
            server.submissions_port,
            context=ssl.create_default_context(),
            timeout=TIMEOUT,
        )


# Mailboxes and helpers


def test_deliver_list_fetch_round_trip(server: Dovecot) -> None:
    user = _unique_user("round-trip")
    message = _message("Round trip", "Body of the round trip.")

    server.deliver(user, message)

    uids = server.list_uids(user)
    assert uids == [1]
    fetched = server.fetch(user, uids[0])
    assert fetched.endswith(message)
    assert f"Delivered-To: {user}".encode() in fetched


def test_deliver_converts_line_endings(server: Dovecot) -> None:
    user = _unique_user("line-endings")
    message = b"Subject: Bare line feeds\nFrom: a@example.test\n\n.Leading dot.\nEnd.\n"

    server.deliver(user, message)

    assert server.fetch(user, 1).endswith(message.replace(b"\n", b"\r\n"))


def test_deliver_to_other_folder_keeps_bytes(server: Dovecot) -> None:
    user = _unique_user("archive")
    message = b"Subject: Archived\nFrom: a@example.test\n\nLine one.\nLine two.\n"

    server.deliver(user, message, "Archive/2024")

    assert server.list_uids(user, "Archive/2024") == [1]
    assert server.list_uids(user) == []
    assert server.fetch(user, 1, "Archive/2024") == message.replace(b"\n", b"\r\n")


def test_fetch_keeps_message_unseen(server: Dovecot) -> None:
    user = _unique_user("unseen")
    server.deliver(user, _message("Unread"))

    server.fetch(user, 1)

    with server.master_session(user) as imap:
        imap.select("INBOX", readonly=True)
        status, data = imap.uid("SEARCH", "UNSEEN")
    assert status == "OK"
    assert data[0].split() == [b"1"]


def test_fetch_missing_uid_raises(server: Dovecot) -> None:
    user = _unique_user("missing")
    server.deliver(user, _message("Only one"))

    with pytest.raises(DovecotError, match="No message with UID 7"):
        server.fetch(user, 7)


def test_append_many_crosses_batches(server: Dovecot) -> None:
    user = _unique_user("bulk")
    count = dovecot_module.APPEND_BATCH_MESSAGES + 50
    messages = (_message(f"Bulk {number}") for number in range(count))

    uids = server.append_many(user, messages, "Bulk")

    assert uids == list(range(1, count + 1))
    assert server.list_uids(user, "Bulk") == uids
    assert b"Subject: Bulk 0\r\n" in server.fetch(user, 1, "Bulk")
    assert f"Subject: Bulk {count - 1}\r\n".encode() in server.fetch(user, count, "Bulk")


def test_append_many_with_no_messages(server: Dovecot) -> None:
    user = _unique_user("empty")

    assert server.append_many(user, [], "Empty") == []
    assert server.list_uids(user, "Empty") == []


def test_special_use_folders_listed(server: Dovecot) -> None:
    with _imaps(server) as imap:
        imap.login(ALICE, ALICE_PASSWORD)
        status, lines = imap.list()
    assert status == "OK"
    by_name = {
        line.rsplit(b" ", 1)[1].strip(b'"'): line for line in lines if isinstance(line, bytes)
    }

    assert b"\\Trash" in by_name[b"Trash"]
    assert b"\\Sent" in by_name[b"Sent"]
    assert b"INBOX" in by_name


def test_invalid_user_name_rejected(server: Dovecot) -> None:
    for user in ("", "a b@example.test", "a:b", "a*b", "../etc", "a/b"):
        with pytest.raises(ValueError, match="Invalid user name"):
            server.deliver(user, _message("Never stored"))


# Submission


def test_submission_starttls_relays_to_sink(
    server: Dovecot, smtp_sink: tuple[RecordingHandler, int]
) -> None:
    handler, _ = smtp_sink
    subject = f"Submitted {secrets.token_hex(4)}"

    with smtplib.SMTP(server.host, server.submission_port, timeout=TIMEOUT) as smtp:
        smtp.starttls(context=server.ssl_context())
        smtp.login(ALICE, ALICE_PASSWORD)
        refused = smtp.sendmail(ALICE, ["bob@example.test"], _message(subject))

    assert refused == {}
    received = [e for e in handler.envelopes if subject.encode() in (e.original_content or b"")]
    assert len(received) == 1
    assert received[0].mail_from == ALICE
    assert received[0].rcpt_tos == ["bob@example.test"]


def test_submissions_implicit_tls_login(server: Dovecot) -> None:
    with smtplib.SMTP_SSL(
        server.host, server.submissions_port, context=server.ssl_context(), timeout=TIMEOUT
    ) as smtp:
        code, _ = smtp.login(ALICE, ALICE_PASSWORD)

    assert code == 235


def test_submission_wrong_password_rejected(server: Dovecot) -> None:
    with (
        smtplib.SMTP_SSL(
            server.host, server.submissions_port, context=server.ssl_context(), timeout=TIMEOUT
        ) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError) as raised,
    ):
        smtp.login(ALICE, "not the password")

    assert raised.value.smtp_code == 535


# OAuth


def test_xoauth2_imap_login(
    server: Dovecot, oauth_server: AuthServer, http: requests.Session
) -> None:
    token = _obtain_token(oauth_server, http, CAROL, CAROL_PASSWORD)
    server.deliver(CAROL, _message("For Carol"))

    with _imaps(server) as imap:
        status, _ = imap.authenticate("XOAUTH2", _sasl_callback(_xoauth2(CAROL, token), []))
        assert status == "OK"
        status, data = imap.select("INBOX", readonly=True)
        assert status == "OK"
        assert data[0] is not None
        assert int(data[0]) >= 1


def test_oauthbearer_imap_login_after_starttls(
    server: Dovecot, oauth_server: AuthServer, http: requests.Session
) -> None:
    token = _obtain_token(oauth_server, http, CAROL, CAROL_PASSWORD)

    with imaplib.IMAP4(server.host, server.imap_port, timeout=TIMEOUT) as imap:
        imap.starttls(server.ssl_context())
        assert "AUTH=OAUTHBEARER" in imap.capabilities
        status, _ = imap.authenticate("OAUTHBEARER", _sasl_callback(_oauthbearer(CAROL, token), []))

    assert status == "OK"


def test_xoauth2_submission_login(
    server: Dovecot,
    oauth_server: AuthServer,
    http: requests.Session,
    smtp_sink: tuple[RecordingHandler, int],
) -> None:
    handler, _ = smtp_sink
    token = _obtain_token(oauth_server, http, CAROL, CAROL_PASSWORD)
    subject = f"OAuth submission {secrets.token_hex(4)}"

    with smtplib.SMTP(server.host, server.submission_port, timeout=TIMEOUT) as smtp:
        smtp.starttls(context=server.ssl_context())
        smtp.ehlo()
        code, _ = smtp.auth(
            "XOAUTH2", lambda challenge=None: _xoauth2(CAROL, token), initial_response_ok=True
        )
        smtp.sendmail(CAROL, ["dave@example.test"], _message(subject))

    assert code == 235
    assert any(subject.encode() in (e.original_content or b"") for e in handler.envelopes)


def test_expired_token_rejected(
    server: Dovecot, oauth_server: AuthServer, http: requests.Session
) -> None:
    token = _obtain_token(oauth_server, http, CAROL, CAROL_PASSWORD)
    _expire_tokens(oauth_server, http, CAROL)
    challenges: list[bytes] = []

    with _imaps(server) as imap, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.authenticate("XOAUTH2", _sasl_callback(_xoauth2(CAROL, token), challenges))

    assert len(challenges) == 1
    assert json.loads(challenges[0])["status"] == "401"


def test_expired_token_rejected_by_submission(
    server: Dovecot, oauth_server: AuthServer, http: requests.Session
) -> None:
    token = _obtain_token(oauth_server, http, CAROL, CAROL_PASSWORD)
    _expire_tokens(oauth_server, http, CAROL)
    responses = iter([_xoauth2(CAROL, token), ""])

    with smtplib.SMTP(server.host, server.submission_port, timeout=TIMEOUT) as smtp:
        smtp.starttls(context=server.ssl_context())
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as raised:
            smtp.auth("XOAUTH2", lambda challenge=None: next(responses), initial_response_ok=True)

    assert raised.value.smtp_code == 535


def test_token_of_other_user_rejected(
    server: Dovecot, oauth_server: AuthServer, http: requests.Session
) -> None:
    token = _obtain_token(oauth_server, http, CAROL, CAROL_PASSWORD)

    with _imaps(server) as imap, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.authenticate("XOAUTH2", _sasl_callback(_xoauth2(ALICE, token), []))


def test_password_does_not_open_oauth_only_user(server: Dovecot) -> None:
    with _imaps(server) as imap, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(CAROL, CAROL_PASSWORD)


# Lifecycle


def test_server_without_relay_or_oauth(dovecot_binary: str, tmp_path: Path) -> None:
    harness = Dovecot(tmp_path, introspection_url=None, password_users={ALICE: ALICE_PASSWORD})
    with harness:
        with imaplib.IMAP4(harness.host, harness.imap_port, timeout=TIMEOUT) as imap:
            imap.starttls(harness.ssl_context())
            assert "AUTH=XOAUTH2" not in imap.capabilities
            assert "AUTH=PLAIN" in imap.capabilities

        with smtplib.SMTP(harness.host, harness.submission_port, timeout=TIMEOUT) as smtp:
            smtp.starttls(context=harness.ssl_context())
            smtp.login(ALICE, ALICE_PASSWORD)
            with pytest.raises(smtplib.SMTPSenderRefused) as raised:
                smtp.sendmail(ALICE, ["bob@example.test"], _message("Nowhere to go"))
        assert raised.value.smtp_code == 421


def test_restart_keeps_ports_and_mail(dovecot_binary: str, tmp_path: Path) -> None:
    harness = Dovecot(tmp_path / "work", introspection_url=None)
    harness.start()
    try:
        harness.deliver(ALICE, _message("Before restart"))
        ports = (harness.imap_port, harness.imaps_port, harness.lmtp_port)
        pid = int((harness.base_dir / "master.pid").read_text())

        harness.stop()
        assert not harness.running
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)

        harness.start()
        assert (harness.imap_port, harness.imaps_port, harness.lmtp_port) == ports
        assert harness.list_uids(ALICE) == [1]
    finally:
        harness.stop()


def test_start_moves_off_taken_port(dovecot_binary: str, tmp_path: Path) -> None:
    harness = Dovecot(tmp_path, introspection_url=None)
    taken_port = harness.imaps_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken_port))
        squatter.listen()

        with harness:
            assert harness.imaps_port != taken_port
            with _imaps(harness) as imap:
                assert imap.welcome.startswith(b"* OK")


def test_start_failure_reports_log(
    dovecot_binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dovecot_module, "START_ATTEMPTS", 1)
    harness = Dovecot(tmp_path, introspection_url=None)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", harness.lmtp_port))
        squatter.listen()

        with pytest.raises(DovecotError, match="Address already in use"):
            harness.start()

    assert not harness.running


def test_mail_dir_inside_reachable_workdir(dovecot_binary: str) -> None:
    parent = Path(tempfile.mkdtemp(prefix="dovecot-harness-test-"))
    parent.chmod(0o755)
    try:
        harness = Dovecot(parent / "work", introspection_url=None)
        with harness:
            harness.deliver(ALICE, _message("Stored in the work directory"))

            assert harness.mail_dir == parent / "work" / "mail"
            stored = [path for path in (harness.mail_dir / ALICE).rglob("*") if path.is_file()]
            assert any(path.parent.name == "new" for path in stored)
    finally:
        shutil.rmtree(parent)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs a mail directory for nobody")
def test_mail_dir_fallback_when_unreachable(dovecot_binary: str, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    harness = Dovecot(private / "work", introspection_url=None)
    with harness:
        harness.deliver(ALICE, _message("Stored outside the work directory"))
        mail_dir = harness.mail_dir

        assert not mail_dir.is_relative_to(private)
        assert mail_dir.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert harness.list_uids(ALICE) == [1]

    del harness
    gc.collect()
    assert not mail_dir.exists()


def test_helpers_require_running_server(tmp_path: Path) -> None:
    harness = Dovecot(tmp_path, introspection_url=None)

    with pytest.raises(DovecotError, match="not running"):
        harness.list_uids(ALICE)
    with pytest.raises(DovecotError, match="start"):
        _ = harness.ca_file


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
