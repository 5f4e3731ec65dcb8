"""Run a private Dovecot 2.3 on 127.0.0.1 for tests, benchmarks and the demo.

The server offers IMAP (plain with STARTTLS, and implicit TLS), mail submission
(STARTTLS, and implicit TLS) relaying to a caller's SMTP sink, and LMTP for delivery.
Logins use PLAIN/LOGIN against a password file, or XOAUTH2/OAUTHBEARER checked by POST
to an RFC 7662 token introspection endpoint.

Everything lives in the caller's work directory and nothing is read from /etc/dovecot.
The harness also has a master user that may open any mailbox, so the assertion
helpers (`list_uids`, `fetch`, `append_many`) need no user password. That works even
for users who can only log in with OAuth.

Dovecot 2.3 refuses to run mail processes as root ("Mail access not allowed for
root"). So when the harness runs as root, mailboxes belong to the user ``nobody``. If
``nobody`` cannot reach the work directory (pytest's ``tmp_path`` sits below a 0700
directory), the mailboxes go to a private directory in the system temporary directory
instead. That directory is removed when the `Dovecot` object is garbage collected or
the interpreter exits. Without root, every Dovecot process runs as the current user
and nothing is chrooted.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import imaplib
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from devservers.certs import CertificatePaths, make_certificate

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MASTER_USER = "harness-master"
MASTER_SEPARATOR = "*"

START_TIMEOUT = 15.0
"""Seconds to wait for the IMAP greeting after `dovecot` returns."""
STOP_TIMEOUT = 10.0
"""Seconds to wait for the master process to exit after SIGTERM before sending SIGKILL."""
CLIENT_TIMEOUT = 30.0
"""Socket timeout in seconds for the helpers' IMAP and LMTP connections."""
START_ATTEMPTS = 3
"""Starts to try, with new ports each time, when a listener port was taken meanwhile."""
APPEND_BATCH_MESSAGES = 200
APPEND_BATCH_BYTES = 8 * 1024 * 1024
LOG_TAIL_LINES = 40

# Characters that would break the passwd-file format, the master login name
# (user*master) or the home directory path (home=DIR/%u).
_FORBIDDEN_USERNAME = re.compile(r"[\x00-\x20:*/%\\\x7f]")
_UNSAFE_PATH = re.compile(r"[\s\"'%]")
_APPENDUID = re.compile(rb"\[APPENDUID \d+ ([0-9:,]+)\]")
_SEARCH_PATHS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# Services that Dovecot 2.3 chroots by default (`doveconf -d`), which needs root.
_CHROOTED_SERVICES = (
    "aggregator",
    "anvil",
    "director",
    "imap-login",
    "imap-urlauth-login",
    "ipc",
    "old-stats",
    "submission-login",
)


class DovecotError(RuntimeError):
    """Dovecot failed to start or stop, or a helper's IMAP or LMTP command failed."""


def find_dovecot() -> str | None:
    """Return the path of the `dovecot` binary, or None when it is not installed.

    The sbin directories are searched too, because Debian installs it in /usr/sbin,
    which is often missing from a non-root PATH.
    """
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *_SEARCH_PATHS])
    return shutil.which("dovecot", path=search_path)


@dataclass(frozen=True)
class _MailOwner:
    """Unix account that Dovecot's mail processes run as."""

    uid: int
    gid: int


class Dovecot:
    """A Dovecot server with its own configuration, ports, certificate and mailboxes.

    Ports are chosen in the constructor and kept across `stop` and `start`, unless a
    port was taken by another program in between. Mail is kept across restarts too.
    User names are case-sensitive (``auth_username_format = %u``).
    """

    host: str = HOST

    def __init__(
        self,
        workdir: Path,
        *,
        introspection_url: str | None,
        password_users: dict[str, str] | None = None,
        relay: tuple[str, int] | None = None,
    ) -> None:
        """Prepare a server without starting it.

        `introspection_url` is the full RFC 7662 endpoint including the client
        credentials, e.g. ``http://ID:SECRET@127.0.0.1:PORT/introspect``. When it is
        None, XOAUTH2 and OAUTHBEARER are neither offered nor accepted.
        `password_users` maps user names to passwords for PLAIN and LOGIN.
        `relay` is the (host, port) of the SMTP server that submission forwards to.
        Without it, submission still accepts logins but rejects MAIL FROM with 421,
        because the relay address is a bound socket that does not listen.
        """
        self.workdir = Path(workdir).resolve()
        _validate_config_path(self.workdir)
        self.introspection_url = introspection_url
        self._oauth2_config = b""
        if introspection_url is not None:
            self._oauth2_config = _oauth2_config(introspection_url)
        self.password_users = dict(password_users or {})
        for user in self.password_users:
            _validate_username(user)
        self.relay = relay
        self.master_password = secrets.token_urlsafe(24)

        self.config_file = self.workdir / "dovecot.conf"
        self.log_file = self.workdir / "dovecot.log"
        self.base_dir = self.workdir / "run"
        self._startup_output = self.workdir / "dovecot-startup.txt"
        self._certificate: CertificatePaths | None = None
        self._mail_dir: Path | None = None
        self._closed_relay: socket.socket | None = None
        self._master_pid: int | None = None
        self._assign_ports()

    def _assign_ports(self) -> None:
        (
            self.imap_port,
            self.imaps_port,
            self.submission_port,
            self.submissions_port,
            self.lmtp_port,
        ) = _free_ports(5)

    @property
    def ca_file(self) -> Path:
        """PEM file of the authority that signed the server certificate."""
        if self._certificate is None:
            raise DovecotError("The certificate is created by start(); call it first.")
        return self._certificate.ca

    @property
    def mail_dir(self) -> Path:
        """Directory that contains one home directory per user, with ``Maildir`` inside."""
        if self._mail_dir is None:
            raise DovecotError("The mail directory is created by start(); call it first.")
        return self._mail_dir

    @property
    def running(self) -> bool:
        """Whether the master process that `start` launched is still alive."""
        return self._master_pid is not None and not _process_exited(self._master_pid)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Lifecycle

    def start(self) -> None:
        """Write the configuration, launch Dovecot and wait for the IMAP greeting.

        Raises DovecotError, with the end of the log, when the binary is missing, the
        configuration is rejected or no greeting arrives within START_TIMEOUT seconds.
        """
        if self.running:
            raise DovecotError(f"Dovecot is already running with master pid {self._master_pid}.")
        binary = find_dovecot()
        if binary is None:
            raise DovecotError(
                "The dovecot binary was not found in PATH or the sbin directories. "
                "Install Dovecot 2.3 (Debian: dovecot-core dovecot-imapd "
                "dovecot-submissiond dovecot-lmtpd)."
            )

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._certificate is None:
            self._certificate = make_certificate(self.workdir / "tls")
        owner = _mail_owner()
        if self._mail_dir is None:
            self._mail_dir = self._create_mail_dir(owner)
        if self.relay is None and self._closed_relay is None:
            self._closed_relay = _bound_closed_socket()

        for attempt in range(1, START_ATTEMPTS + 1):
            self._write_files(owner)
            shutil.rmtree(self.base_dir, ignore_errors=True)
            started = time.monotonic()
            try:
                self._launch(binary)
            except DovecotError as error:
                if attempt < START_ATTEMPTS and "Address already in use" in str(error):
                    logger.warning(
                        "Dovecot start attempt %d found a port in use; retrying with new ports",
                        attempt,
                    )
                    self._stop_master()
                    self._assign_ports()
                    continue
                self.stop()
                raise
            logger.info(
                "Dovecot started in %.2f s: master pid %s, IMAP %d, IMAPS %d, "
                "submission %d, submissions %d, LMTP %d, log %s",
                time.monotonic() - started,
                self._master_pid,
                self.imap_port,
                self.imaps_port,
                self.submission_port,
                self.submissions_port,
                self.lmtp_port,
                self.log_file,
            )
            return

    def _launch(self, binary: str) -> None:
        try:
            log_offset = self.log_file.stat().st_size
        except FileNotFoundError:
            log_offset = 0
        # The daemonized master inherits these descriptors and keeps them open, so
        # they must not be the caller's pipes, or a piped caller never sees EOF.
        with self._startup_output.open("wb") as output:
            try:
                result = subprocess.run(  # noqa: S603 - fixed argument list
                    [binary, "-c", str(self.config_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    timeout=START_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise DovecotError(
                    f"dovecot -c {self.config_file} did not return within {START_TIMEOUT} s.\n"
                    + self.diagnostics()
                ) from error
        if result.returncode != 0:
            raise DovecotError(
                f"dovecot -c {self.config_file} exited with status {result.returncode}.\n"
                + self.diagnostics()
            )

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._master_pid is None:
                self._master_pid = self._read_master_pid()
            if self._master_pid is not None and _process_exited(self._master_pid):
                raise DovecotError("The Dovecot master process exited.\n" + self.diagnostics())
            # The master keeps running when a service fails and retries it with growing
            # delays, so the failure shows only in the log.
            if b"Fatal: " in _read_from(self.log_file, log_offset):
                raise DovecotError("A Dovecot service failed to start.\n" + self.diagnostics())
            if self._master_pid is not None and _imap_greeting_received(self.imap_port):
                return
            time.sleep(0.02)
        raise DovecotError(
            f"No IMAP greeting on {HOST}:{self.imap_port} within {START_TIMEOUT} s.\n"
            + self.diagnostics()
        )

    def stop(self) -> None:
        """Send SIGTERM to the master process and wait until it and its listeners are gone.

        Does nothing when the server is not running. Sends SIGKILL if the master is
        still alive after STOP_TIMEOUT seconds.
        """
        self._stop_master()
        if self._closed_relay is not None:
            self._closed_relay.close()
            self._closed_relay = None

    def _stop_master(self) -> None:
        pid = self._master_pid or self._read_master_pid()
        self._master_pid = None
        if pid is None or _process_exited(pid):
            return

        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        if not _wait_for_exit(pid, STOP_TIMEOUT):
            logger.warning(
                "Dovecot master pid %d ignored SIGTERM for %s s; sending SIGKILL", pid, STOP_TIMEOUT
            )
            os.kill(pid, signal.SIGKILL)
            _wait_for_exit(pid, STOP_TIMEOUT)
        # Login processes inherit the listening sockets and exit a moment after the
        # master, so a quick restart on the same ports must wait for them.
        _wait_for_ports_free(self._ports(), STOP_TIMEOUT)
        logger.info("Dovecot master pid %d stopped in %.2f s", pid, time.monotonic() - started)

    def _ports(self) -> list[int]:
        return [
            self.imap_port,
            self.imaps_port,
            self.submission_port,
            self.submissions_port,
            self.lmtp_port,
        ]

    def _read_master_pid(self) -> int | None:
        """Return the pid from base_dir/master.pid if that process runs our config file."""
        try:
            pid = int((self.base_dir / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not Path("/proc/self").exists():
            return pid  # Without /proc the pid file is all there is to go on.
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return None
        except PermissionError:
            return pid
        if os.fsencode(str(self.config_file)) not in command_line:
            logger.warning(
                "Ignoring pid %d from master.pid because it does not run %s", pid, self.config_file
            )
            return None
        return pid

    def diagnostics(self) -> str:
        """Return the output of the last `dovecot` launch and the end of the log file."""
        parts = []
        for title, path in (
            ("dovecot output", self._startup_output),
            (f"last {LOG_TAIL_LINES} lines of {self.log_file}", self.log_file),
        ):
            try:
                lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            except FileNotFoundError:
                lines = ["(missing)"]
            parts.append(f"--- {title} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    # Files

    def _create_mail_dir(self, owner: _MailOwner) -> Path:
        if _can_traverse(self.workdir, owner):
            mail_dir = self.workdir / "mail"
            mail_dir.mkdir(exist_ok=True)
        else:
            mail_dir = Path(tempfile.mkdtemp(prefix="mailroom-dovecot-mail-"))
            weakref.finalize(self, shutil.rmtree, mail_dir, ignore_errors=True)
            _validate_config_path(mail_dir)
            if not _can_traverse(mail_dir.parent, owner):
                raise DovecotError(
                    f"Neither {self.workdir} nor {mail_dir} is reachable by uid {owner.uid}, "
                    "which Dovecot's mail processes run as. Use a work directory whose "
                    "parents all allow search (o+x)."
                )
            logger.info(
                "Mailboxes are in %s because uid %d cannot reach %s",
                mail_dir,
                owner.uid,
                self.workdir,
            )
        if os.geteuid() == 0:
            os.chown(mail_dir, owner.uid, owner.gid)
        mail_dir.chmod(0o700)
        return mail_dir

    def _write_files(self, owner: _MailOwner) -> None:
        _write_private(self.workdir / "users.passwd", _passwd_file(self.password_users))
        _write_private(
            self.workdir / "masters.passwd", _passwd_file({MASTER_USER: self.master_password})
        )
        if self.introspection_url is not None:
            _write_private(self.workdir / "oauth2.conf", self._oauth2_config)
        self.config_file.write_text(self._render_config(owner))

    def _render_config(self, owner: _MailOwner) -> str:
        assert self._certificate is not None and self._mail_dir is not None
        if self.relay is not None:
            relay_host, relay_port = self.relay
        else:
            assert self._closed_relay is not None
            relay_host, relay_port = self._closed_relay.getsockname()[:2]
        process_user = pwd.getpwuid(os.geteuid()).pw_name
        process_group = grp.getgrgid(os.getegid()).gr_name
        mechanisms = "plain login"
        oauth_passdb = ""
        if self.introspection_url is not None:
            mechanisms += " xoauth2 oauthbearer"
            oauth_passdb = f"""
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self.workdir / "oauth2.conf"}
}}"""
        # Without root, Dovecot can neither switch users nor chroot its helper processes.
        rootless = ""
        if os.geteuid() != 0:
            rootless = f"""
default_internal_user = {process_user}
default_internal_group = {process_group}
default_login_user = {process_user}
"""
            for service in _CHROOTED_SERVICES:
                rootless += f"service {service} {{\n  chroot =\n}}\n"

        return f"""# Written by devservers.dovecot; rewritten on every start.
protocols = imap submission lmtp
listen = {HOST}
base_dir = {self.base_dir}
state_dir = {self.workdir / "state"}
log_path = {self.log_file}
hostname = localhost
{rootless}

ssl = yes
ssl_cert = <{self._certificate.cert}
ssl_key = <{self._certificate.key}
disable_plaintext_auth = no

auth_mechanisms = {mechanisms}
# Dovecot lowercases user names by default (%Lu). The harness keeps them as given.
auth_username_format = %u
auth_verbose = yes
# Dovecot's default of 2 s per failed login would slow every wrong-password test.
auth_failure_delay = 0
auth_master_user_separator = {MASTER_SEPARATOR}

passdb {{
  driver = passwd-file
  master = yes
  args = {self.workdir / "masters.passwd"}
}}{oauth_passdb}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = {self.workdir / "users.passwd"}
}}
userdb {{
  driver = static
  args = uid={owner.uid} gid={owner.gid} home={self._mail_dir}/%u allow_all_users=yes
}}
first_valid_uid = {owner.uid}
first_valid_gid = {owner.gid}
mail_location = maildir:~/Maildir

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}

submission_relay_host = {relay_host}
submission_relay_port = {relay_port}
submission_relay_trusted = yes

# The auth process reads the password files in the work directory, which may be
# private to the user running the harness.
service auth {{
  user = {process_user}
}}
service auth-worker {{
  user = {process_user}
}}
# Without the penalty socket, failed logins from 127.0.0.1 do not delay later logins.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = {self.submission_port}
  }}
  inet_listener submissions {{
    port = {self.submissions_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {self.lmtp_port}
  }}
}}
"""

    # Mail helpers

    def ssl_context(self) -> ssl.SSLContext:
        """Return a client context that trusts this server's certificate authority."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def master_login(self, user: str) -> tuple[str, str]:
        """Return the (login, password) pair that opens `user`'s mailboxes as the master user."""
        _validate_username(user)
        return f"{user}{MASTER_SEPARATOR}{MASTER_USER}", self.master_password

    @contextlib.contextmanager
    def master_session(self, user: str) -> Iterator[imaplib.IMAP4_SSL]:
        """Yield an IMAPS connection logged in to `user`'s mailboxes as the master user."""
        if not self.running:
            raise DovecotError("Dovecot is not running; call start() first.")
        login, password = self.master_login(user)
        imap = imaplib.IMAP4_SSL(
            self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=CLIENT_TIMEOUT
        )
        try:
            imap.login(login, password)
            yield imap
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def deliver(self, user: str, message: bytes, folder: str = "INBOX") -> None:
        """Store `message` in `user`'s `folder`.

        Line endings become CRLF. INBOX is delivered over LMTP, so Dovecot prepends
        Return-Path, Delivered-To and Received headers. Other folders get an IMAP
        APPEND as the master user, which stores the message unchanged and creates the
        folder if it is missing.
        """
        _validate_username(user)
        if folder != "INBOX":
            self.append_many(user, [message], folder)
            return
        if not self.running:
            raise DovecotError("Dovecot is not running; call start() first.")
        try:
            with smtplib.LMTP(self.host, self.lmtp_port, timeout=CLIENT_TIMEOUT) as lmtp:
                lmtp.sendmail("", [user], _crlf(message))
        except smtplib.SMTPException as error:
            raise DovecotError(
                f"LMTP delivery to {user!r} failed: {error}\n" + self.diagnostics()
            ) from error

    def append_many(self, user: str, messages: Iterable[bytes], folder: str = "INBOX") -> list[int]:
        """Append `messages` to `user`'s `folder` and return their UIDs in order.

        Sends MULTIAPPEND (RFC 3502) commands of up to APPEND_BATCH_MESSAGES messages
        with non-synchronizing literals (RFC 7888), so filling a folder costs one round
        trip per batch. Each batch is atomic, and the folder is created if missing.
        """
        uids: list[int] = []
        with self.master_session(user) as imap:
            _create_mailbox(imap, folder)
            batch: list[bytes] = []
            batch_bytes = 0
            for number, message in enumerate(messages, start=1):
                literal = _crlf(message)
                batch.append(literal)
                batch_bytes += len(literal)
                if len(batch) >= APPEND_BATCH_MESSAGES or batch_bytes >= APPEND_BATCH_BYTES:
                    uids += _multiappend(imap, folder, batch, f"BULK{number}")
                    batch = []
                    batch_bytes = 0
            if batch:
                uids += _multiappend(imap, folder, batch, "BULKEND")
        return uids

    def list_uids(self, user: str, folder: str = "INBOX") -> list[int]:
        """Return the UIDs of all messages in `user`'s `folder`, in ascending order."""
        with self.master_session(user) as imap:
            _examine(imap, user, folder)
            status, data = imap.uid("SEARCH", "ALL")
            if status != "OK":
                raise DovecotError(f"UID SEARCH in {folder!r} of {user!r} failed: {data!r}")
            return sorted(int(uid) for uid in data[0].split())

    def fetch(self, user: str, uid: int, folder: str = "INBOX") -> bytes:
        """Return the full message with `uid` from `user`'s `folder` without setting \\Seen."""
        with self.master_session(user) as imap:
            _examine(imap, user, folder)
            status, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
            if status != "OK":
                raise DovecotError(f"UID FETCH {uid} in {folder!r} of {user!r} failed: {data!r}")
            for item in data:
                if isinstance(item, tuple) and b"BODY[]" in item[0]:
                    return item[1]
            raise DovecotError(f"No message with UID {uid} in {folder!r} of {user!r}.")


# Helpers for files and processes


def _validate_username(user: str) -> None:
    if not user or _FORBIDDEN_USERNAME.search(user) or user in (".", ".."):
        raise ValueError(
            f"Invalid user name {user!r}: it must be non-empty and contain no whitespace, "
            "control characters or any of : * / % \\"
        )


def _validate_config_path(path: Path) -> None:
    """Reject paths that Dovecot's configuration would split at spaces or expand at %."""
    if _UNSAFE_PATH.search(str(path)):
        raise ValueError(
            f"Unsupported directory {str(path)!r}: Dovecot settings cannot contain "
            "whitespace, quotes or % in this path"
        )


def _passwd_file(users: dict[str, str]) -> bytes:
    """Render a Dovecot passwd-file with salted SHA-256 ({SSHA256}) password hashes.

    A hash, unlike {PLAIN}, cannot contain the ':' that separates the fields.
    """
    lines = []
    for user, password in users.items():
        salt = secrets.token_bytes(8)
        digest = hashlib.sha256(password.encode() + salt).digest()
        encoded = base64.b64encode(digest + salt).decode("ascii")
        lines.append(f"{user}:{{SSHA256}}{encoded}\n")
    return "".join(lines).encode()


def _oauth2_config(introspection_url: str) -> bytes:
    if "\n" in introspection_url or not introspection_url.startswith(("http://", "https://")):
        raise ValueError(f"Invalid introspection URL {introspection_url!r}: expected http(s)://")
    return (
        "introspection_mode = post\n"
        f"introspection_url = {introspection_url}\n"
        "force_introspection = yes\n"
        "username_attribute = username\n"
        "active_attribute = active\n"
        "active_value = true\n"
    ).encode()


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _mail_owner() -> _MailOwner:
    """Return the account for mail processes, which is ``nobody`` when we run as root."""
    if os.geteuid() != 0:
        return _MailOwner(os.geteuid(), os.getegid())
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError as error:
        raise DovecotError(
            "Running as root, but there is no 'nobody' account for Dovecot's mail "
            "processes, which may not run as root."
        ) from error
    return _MailOwner(nobody.pw_uid, nobody.pw_gid)


def _can_traverse(directory: Path, owner: _MailOwner) -> bool:
    """Tell from the mode bits whether `owner` may search every directory on the path.

    ACLs are ignored.
    """
    for path in [directory, *directory.parents]:
        info = path.stat()
        if info.st_uid == owner.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == owner.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Return `count` distinct ports on 127.0.0.1 that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(probe)
            probe.bind((HOST, 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read()
    except FileNotFoundError:
        return b""


def _bound_closed_socket() -> socket.socket:
    """Return a socket bound to a loopback port without listening.

    Connections to that port are refused, and no other program can take the port
    while the socket stays open.
    """
    bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bound.bind((HOST, 0))
    return bound


def _process_exited(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # The daemonized master is not our child. Without a reaping init it stays a zombie.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] == "Z"


def _wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _process_exited(pid):
            return True
        time.sleep(0.02)
    return _process_exited(pid)


def _wait_for_ports_free(ports: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending and time.monotonic() < deadline:
        pending = [port for port in pending if not _port_free(port)]
        if pending:
            time.sleep(0.02)
    if pending:
        logger.warning("Ports %s still in use %s s after Dovecot stopped", pending, timeout)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Dovecot binds with SO_REUSEADDR too, so connections in TIME_WAIT don't count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def _imap_greeting_received(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as connection:
            return connection.recv(64).startswith(b"* OK")
    except OSError:
        return False


# Helpers for IMAP


def _quote_mailbox(folder: str) -> str:
    """Quote a mailbox name for imaplib, which sends arguments unquoted."""
    if not folder.isascii() or any(character in folder for character in "\r\n\0"):
        raise ValueError(
            f"Unsupported mailbox name {folder!r}: use printable ASCII "
            "(modified UTF-7 names are not encoded by this helper)"
        )
    escaped = folder.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _crlf(message: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", message)


def _create_mailbox(imap: imaplib.IMAP4, folder: str) -> None:
    if folder.upper() == "INBOX":
        return
    status, data = imap.create(_quote_mailbox(folder))
    if status != "OK" and b"[ALREADYEXISTS]" not in b" ".join(data):
        raise DovecotError(f"CREATE {folder!r} failed: {data!r}")


def _examine(imap: imaplib.IMAP4, user: str, folder: str) -> None:
    status, data = imap.select(_quote_mailbox(folder), readonly=True)
    if status != "OK":
        raise DovecotError(f"Mailbox {folder!r} of {user!r} could not be opened: {data!r}")


def _multiappend(imap: imaplib.IMAP4, folder: str, messages: list[bytes], tag: str) -> list[int]:
    """Send one MULTIAPPEND command with literals and return the new UIDs.

    imaplib has no MULTIAPPEND, so the command goes out through `send` and the
    response is read with `readline`. No other command is in flight on `imap`.
    """
    command = bytearray(f"{tag} APPEND {_quote_mailbox(folder)}".encode())
    for message in messages:
        command += b" {%d+}\r\n" % len(message)
        command += message
    command += b"\r\n"
    imap.send(bytes(command))

    prefix = tag.encode() + b" "
    while True:
        line = imap.readline()
        if not line:
            raise DovecotError(f"Connection closed during APPEND to {folder!r}.")
        if line.startswith(prefix):
            break
    if not line.startswith(prefix + b"OK"):
        raise DovecotError(f"APPEND of {len(messages)} messages to {folder!r} failed: {line!r}")
    match = _APPENDUID.search(line)
    if match is None:
        raise DovecotError(f"APPEND response has no APPENDUID: {line!r}")
    return _parse_uid_set(match.group(1).decode())


def _parse_uid_set(uid_set: str) -> list[int]:
    uids: list[int] = []
    for part in uid_set.split(","):
        first, _, last = part.partition(":")
        low, high = sorted((int(first), int(last or first)))
        uids.extend(range(low, high + 1))
    return uids
