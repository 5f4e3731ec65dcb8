"""FTP and explicit FTPS (AUTH TLS) locations, with ftplib.

Listings use MLSD and MLST (RFC 3659) when the server announces them in FEAT. Servers
without them, such as vsftpd, are listed with NLST, SIZE, MDTM and CWD instead, which
costs a few commands per entry. Data connections are passive, and ftplib connects them
to the control connection's address, not to the address in the PASV reply.
"""

from __future__ import annotations

import contextlib
import datetime
import ftplib  # noqa: S402  (plain FTP is an explicit choice of the administrator)
import logging
import posixpath
import secrets
import socket
import ssl
from collections.abc import Iterator
from typing import BinaryIO

from .base import (
    DEFAULT_PORTS,
    TEMPORARY_PREFIX,
    Entry,
    EntryKind,
    LocationError,
    LocationSettings,
    TreeLocation,
)
from .network import clean_remote_path, connection_error, display_remote_path

logger = logging.getLogger(__name__)

_NOT_FOUND_WORDS = ("no such", "not found", "does not exist", "doesn't exist", "cannot find")
_DENIED_WORDS = ("permission", "privilege", "denied", "not allowed")
_TLS_WORDS = ("tls", "ssl", "secure")


class _SessionReuseFtpTls(ftplib.FTP_TLS):  # noqa: S321
    """FTP_TLS that resumes the control connection's TLS session on data connections.

    vsftpd (require_ssl_reuse, on by default) and FileZilla Server reject data
    connections that start a new TLS session, and plain ftplib always starts one.
    """

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        connection, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # noqa: S321
        if self._prot_p:  # type: ignore[attr-defined]
            assert isinstance(self.sock, ssl.SSLSocket)
            connection = self.context.wrap_socket(
                connection, server_hostname=self.host, session=self.sock.session
            )
        return connection, size


class FtpLocation(TreeLocation):
    """A folder on an FTP server. Relative paths start at the login folder."""

    def __init__(self, settings: LocationSettings, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(settings, clean_remote_path(settings.path))
        if not settings.host:
            raise LocationError("The host setting is empty. Enter the FTP server's host name.")
        self.host = settings.host
        self.port = settings.port or DEFAULT_PORTS["ftp"]
        self.ssl_context = ssl_context
        self._ftp: ftplib.FTP | None = None
        self._home = "/"
        self._has_mlst = False

    def where(self) -> str:
        return f"on {self.host}:{self.port}"

    def display_path(self, path: str) -> str:
        return display_remote_path(path)

    # Connection

    def connect(self) -> None:
        if self._ftp is not None:
            return
        settings = self.settings
        ftp: ftplib.FTP
        if settings.ftp_tls:
            context = self.ssl_context or ssl.create_default_context()
            ftp = _SessionReuseFtpTls(context=context, timeout=settings.timeout)
        else:
            ftp = ftplib.FTP(timeout=settings.timeout)  # noqa: S321
        try:
            self._open(ftp)
        except BaseException:
            ftp.close()
            raise
        self._ftp = ftp

    def _open(self, ftp: ftplib.FTP) -> None:
        settings = self.settings
        try:
            ftp.connect(self.host, self.port, timeout=settings.timeout)
        except (OSError, EOFError, ftplib.Error) as error:
            raise connection_error(error, self.host, self.port, settings.timeout, "FTP") from error

        if isinstance(ftp, ftplib.FTP_TLS):
            self._start_tls(ftp)

        username = settings.username or "anonymous"
        try:
            ftp.login(username, settings.password or "")
        except ftplib.error_perm as error:
            reply = str(error)
            if not settings.ftp_tls and any(word in reply.lower() for word in _TLS_WORDS):
                raise LocationError(
                    f"The FTP server {self.where()} requires TLS (server reply: {reply}). "
                    "Turn on the FTP TLS setting."
                ) from error
            raise LocationError(
                f"Login as {username!r} {self.where()} was rejected (server reply: {reply}). "
                "Check the username and password settings."
            ) from error
        except (OSError, EOFError, ftplib.Error) as error:
            raise connection_error(error, self.host, self.port, settings.timeout, "FTP") from error

        try:
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(True)
            ftp.voidcmd("TYPE I")
            self._home = ftp.pwd()
            self._has_mlst = _announces_mlst(ftp)
        except (OSError, EOFError, ftplib.Error) as error:
            raise LocationError(
                f"The FTP server {self.where()} failed after login: {error}. "
                "Check that the server works."
            ) from error

    def _start_tls(self, ftp: ftplib.FTP_TLS) -> None:
        try:
            ftp.auth()
        except ssl.SSLCertVerificationError as error:
            raise LocationError(
                f"The TLS certificate of {self.host}:{self.port} could not be verified: "
                f"{error.verify_message}. Check the host setting, and that this machine trusts "
                "the authority that signed the server's certificate."
            ) from error
        except ssl.SSLError as error:
            raise LocationError(
                f"The TLS handshake with {self.host}:{self.port} failed: {error.reason or error}. "
                "Check the port and FTP TLS settings."
            ) from error
        except ftplib.error_perm as error:
            raise LocationError(
                f"The FTP server {self.where()} does not offer TLS (AUTH TLS was rejected: "
                f"{error}). Enable TLS on the server, or turn off the FTP TLS setting."
            ) from error
        except (OSError, EOFError, ftplib.Error) as error:
            raise connection_error(
                error, self.host, self.port, self.settings.timeout, "FTP"
            ) from error

    def close(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is None:
            return
        try:
            ftp.quit()
        except (OSError, EOFError, ftplib.Error):
            ftp.close()

    @property
    def ftp(self) -> ftplib.FTP:
        self.connect()
        assert self._ftp is not None
        return self._ftp

    @contextlib.contextmanager
    def native_errors(self) -> Iterator[None]:
        """Map FTP replies to OSError subclasses, and drop a connection in an unknown state."""
        try:
            yield
        except ftplib.error_perm as error:
            reply = str(error)
            lowered = reply.lower()
            if any(word in lowered for word in _NOT_FOUND_WORDS):
                raise FileNotFoundError(reply) from error
            if any(word in lowered for word in _DENIED_WORDS):
                raise PermissionError(reply) from error
            raise OSError(f"the server replied {reply!r}") from error
        except ftplib.error_temp as error:
            raise OSError(f"the server replied {str(error)!r}. Try again later") from error
        except TimeoutError:
            self._drop()
            raise
        except EOFError as error:
            self._drop()
            raise OSError("the server closed the connection") from error
        except (ftplib.Error, ssl.SSLError) as error:
            self._drop()
            raise OSError(str(error)) from error
        except OSError:
            self._drop()
            raise

    def _drop(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            ftp.close()

    # Primitives

    def list_entries(self, directory: str) -> list[Entry]:
        if self._has_mlst:
            return [
                _mlsd_entry(name, facts)
                for name, facts in self.ftp.mlsd(directory)
                if facts.get("type", "").lower() not in ("cdir", "pdir")
            ]
        entries = []
        for listed in self.ftp.nlst(directory):
            name = listed.rstrip("/").rsplit("/", 1)[-1]
            if name in ("", ".", ".."):
                continue
            entry = self.stat_entry(posixpath.join(directory, name))
            if entry is not None:
                entries.append(entry)
        return entries

    def stat_entry(self, path: str) -> Entry | None:
        name = posixpath.basename(path)
        if self._has_mlst:
            try:
                reply = self.ftp.sendcmd(f"MLST {path}")
            except ftplib.error_perm as error:
                if str(error).startswith("550"):
                    return None
                raise
            return _mlst_entry(name, reply)
        return self._stat_without_mlst(path, name)

    def _stat_without_mlst(self, path: str, name: str) -> Entry | None:
        """Tell a file from a folder with SIZE and CWD, for servers without MLST."""
        ftp = self.ftp
        # Listings switch to ASCII mode, where servers reject SIZE.
        ftp.voidcmd("TYPE I")
        try:
            size = ftp.size(path)
        except ftplib.error_perm:
            size = None
        if size is not None:
            return Entry(name, "file", size, self._modification_time(path))
        try:
            ftp.cwd(path)
        except ftplib.error_perm:
            return None
        ftp.cwd(self._home)
        # NOTE: without MLST a folder's own mtime is unknown, so an empty file added to
        # a folder does not change the folder's summary until it grows.
        return Entry(name, "dir", 0, 0.0)

    def _modification_time(self, path: str) -> float:
        try:
            reply = self.ftp.sendcmd(f"MDTM {path}")
        except ftplib.error_perm:
            return 0.0
        return _parse_time(reply[4:].strip())

    def read_file(self, path: str, target: BinaryIO) -> None:
        self.ftp.retrbinary(f"RETR {path}", target.write)

    def store_new(self, source: BinaryIO, directory: str, name: str) -> bool:
        """Upload to a hidden temporary name, then rename it if `name` is still free.

        NOTE: FTP has no create-if-absent, and RNTO replaces an existing file on most
        servers, so a file that another client creates between the check and the rename
        is replaced.
        """
        final = posixpath.join(directory, name)
        if self.stat_entry(final) is not None:
            return False
        temporary = posixpath.join(directory, f"{TEMPORARY_PREFIX}upload-{secrets.token_hex(8)}")
        self.ftp.storbinary(f"STOR {temporary}", source)
        try:
            if self.stat_entry(final) is not None:
                return False
            self.ftp.rename(temporary, final)
            temporary = ""
            return True
        finally:
            if temporary:
                self.ftp.delete(temporary)

    def make_dir(self, path: str) -> None:
        try:
            self.ftp.mkd(path)
        except ftplib.error_perm:
            entry = self.stat_entry(path)
            if entry is None or entry.kind != "dir":
                raise

    def delete_file(self, path: str) -> None:
        self.ftp.delete(path)

    def delete_dir(self, path: str) -> None:
        self.ftp.rmd(path)


def _announces_mlst(ftp: ftplib.FTP) -> bool:
    try:
        features = ftp.sendcmd("FEAT")
    except ftplib.error_perm:
        return False
    return any(line.strip().upper().startswith("MLST") for line in features.splitlines()[1:])


def _entry_kind(facts: dict[str, str]) -> EntryKind:
    kind = facts.get("type", "").lower()
    if kind == "file":
        return "file"
    if kind == "dir":
        return "dir"
    return "other"


def _mlsd_entry(name: str, facts: dict[str, str]) -> Entry:
    kind = _entry_kind(facts)
    size = int(facts.get("size", "0") or 0) if kind == "file" else 0
    return Entry(name, kind, size, _parse_time(facts.get("modify", "")))


def _mlst_entry(name: str, reply: str) -> Entry:
    """Parse the fact line of an MLST reply ("250-...", " type=file;size=3; /path", "250 ...")."""
    for line in reply.splitlines()[1:]:
        if line.startswith(" "):
            facts_text = line[1:].partition(" ")[0]
            facts = {}
            for fact in facts_text.split(";"):
                key, separator, value = fact.partition("=")
                if separator:
                    facts[key.lower()] = value
            return _mlsd_entry(name, facts)
    raise OSError(f"the server sent an MLST reply without facts: {reply!r}")


def _parse_time(value: str) -> float:
    """Parse an RFC 3659 time value (YYYYMMDDHHMMSS[.sss], UTC) into POSIX seconds."""
    whole, _, fraction = value.partition(".")
    try:
        moment = datetime.datetime.strptime(whole, "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0
    seconds = moment.timestamp()
    if fraction.isdigit():
        seconds += int(fraction) / 10 ** len(fraction)
    return seconds
