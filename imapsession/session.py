"""IMAP with imaplib: batched UID FETCH, partial FETCH and exact-UID deletes.

imaplib is used directly because a batched ``UID FETCH`` of raw bodies is
about twice as fast as IMAPClient's parsed responses on the same server.
A large message is fetched alone in partial FETCHes (RFC 3501 section 6.4.5,
``BODY.PEEK[]<offset.length>``), so no more than one piece of it is in memory.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from .errors import AuthenticationFailed, MailboxError, TemporaryMailboxError

logger = logging.getLogger(__name__)

_FETCH_UID = re.compile(rb"UID (\d+)")
_FETCH_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_FETCH_PARTIAL = re.compile(rb"BODY\[\]<(\d+)>")
_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delim>"[^"]*"|NIL) (?P<name>.+)$')


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    use_ssl: bool  # True: implicit TLS; False: STARTTLS, required
    username: str
    folder: str
    timeout: float
    ca_file: Path | None = None


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw: bytes


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> int: ...


# One partial FETCH requests this many bytes. Larger pieces save round trips,
# and each one is in memory until it is written out.
FETCH_PIECE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CopiedUids:
    """The destination UIDs of a MOVE or COPY, from the COPYUID response code (RFC 4315)."""

    uidvalidity: int
    """UIDVALIDITY of the destination folder."""
    uids: dict[int, int]
    """Source UID to destination UID."""


@functools.lru_cache(maxsize=16)
def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Build the client TLS context once per CA file.

    Loading the system CA bundle costs tens of milliseconds of CPU. A cached
    context avoids paying that on every scan, and it is safe to share
    between connections and threads.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def _text(data: object) -> str:
    if isinstance(data, list):
        data = b" ".join(part for part in data if isinstance(part, bytes))
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


# Dovecot ends its tagged replies with timings such as "(0.001 + 0.000 secs).",
# which mean nothing to the person reading the error.
_SERVER_TIMINGS = re.compile(r"\s*\(\d+\.\d+(?: \+ \d+\.\d+)* secs\)\.?\s*$")


def _reply(data: object) -> str:
    """Return a server reply for an error message: no timings, no final period."""
    return _SERVER_TIMINGS.sub("", _text(data)).rstrip(". ")


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _connect(settings: ImapSettings) -> imaplib.IMAP4:
    where = f"{settings.host}:{settings.port}"
    context = _tls_context(settings.ca_file)
    try:
        if settings.use_ssl:
            return imaplib.IMAP4_SSL(
                settings.host, settings.port, ssl_context=context, timeout=settings.timeout
            )
        imap = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout)
    except socket.gaierror:
        raise MailboxError(
            f"Host Name {settings.host!r} cannot be resolved; check the Host Name"
        ) from None
    except ConnectionRefusedError:
        raise MailboxError(
            f"Nothing accepts connections at {where}; check the Host Name and port"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise MailboxError(
            f"The TLS certificate of {where} is not trusted ({exc.verify_message}); "
            "check the Host Name, or install the server's CA certificate (MAIL_CA_FILE)"
        ) from None
    except ssl.SSLError as exc:
        raise MailboxError(
            f"{where} does not speak implicit TLS ({exc.reason}); "
            "untick Use SSL for a STARTTLS port such as 143, or use port 993"
        ) from None
    except TimeoutError:
        hint = (
            "the port may expect implicit TLS: tick Use SSL for a port such as 993"
            if not settings.use_ssl
            else "check the Host Name, port and firewall"
        )
        raise MailboxError(
            f"No IMAP greeting from {where} within {settings.timeout:g} s; {hint}"
        ) from None
    except imaplib.IMAP4.abort as exc:
        raise MailboxError(
            f"{where} did not respond like an IMAP server ({exc}); check the port and Use SSL"
        ) from None
    except OSError as exc:
        raise MailboxError(f"Cannot connect to {where}: {exc.strerror or exc}") from None

    # Without Use SSL, STARTTLS is mandatory: no fallback to plain text.
    if "STARTTLS" not in imap.capabilities:
        imap.shutdown()
        raise MailboxError(
            f"{where} does not offer STARTTLS, and Mailroom never logs in without TLS; "
            "tick Use SSL and use the server's TLS port (usually 993)"
        )
    try:
        imap.starttls(ssl_context=context)
    except ssl.SSLCertVerificationError as exc:
        raise MailboxError(
            f"The TLS certificate of {where} is not trusted ({exc.verify_message}); "
            "check the Host Name, or install the server's CA certificate (MAIL_CA_FILE)"
        ) from None
    except (ssl.SSLError, imaplib.IMAP4.error, OSError) as exc:
        raise MailboxError(f"STARTTLS with {where} failed: {exc}") from None
    return imap


def _xoauth2(username: str, access_token: str):  # type: ignore[no-untyped-def]
    initial = f"user={username}\x01auth=Bearer {access_token}\x01\x01".encode()
    sent = False

    def answer(challenge: bytes) -> bytes:
        nonlocal sent
        if not sent:
            sent = True
            return initial
        # A second challenge carries the server's JSON error; an empty reply
        # ends the exchange so the server sends its NO.
        logger.debug("XOAUTH2 error challenge: %s", challenge[:200])
        return b""

    return answer


def _authenticate(
    imap: imaplib.IMAP4, settings: ImapSettings, password: str | None, access_token: str | None
) -> None:
    try:
        if access_token is not None:
            imap.authenticate("XOAUTH2", _xoauth2(settings.username, access_token))
        elif password is not None:
            imap.login(settings.username, password)
        else:
            raise MailboxError("No password or access token to log in with")
        # Servers list more capabilities (UIDPLUS, MOVE) once logged in, but
        # imaplib keeps only the list it read before login.
        typ, data = imap.capability()
        if typ == "OK" and data and isinstance(data[-1], bytes):
            imap.capabilities = tuple(data[-1].decode("ascii", "replace").upper().split())
    except imaplib.IMAP4.error as exc:
        text = _reply(exc.args[0] if exc.args else exc)
        if "UNAVAILABLE" in text or "Temporary" in text:
            raise TemporaryMailboxError(
                f"{settings.host} cannot check logins right now ({text}); will retry"
            ) from None
        what = "access token" if access_token is not None else "Username or password"
        raise AuthenticationFailed(
            f"{settings.host} rejected the {what} for {settings.username!r} ({text})"
        ) from None
    except (OSError, imaplib.IMAP4.abort) as exc:
        raise TemporaryMailboxError(f"Connection lost while logging in: {exc}") from None


class MailboxSession:
    """A logged-in IMAP session with one folder selected read-write."""

    def __init__(self, imap: imaplib.IMAP4, settings: ImapSettings) -> None:
        self.imap = imap
        self.settings = settings
        self.uidvalidity = 0

    def close(self) -> None:
        try:
            self.imap.logout()
        except (imaplib.IMAP4.error, OSError):
            logger.debug("logout failed; the connection is closed anyway", exc_info=True)

    def __enter__(self) -> MailboxSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, typ: str, data: object, what: str) -> object:
        if typ != "OK":
            raise MailboxError(f"{what} failed: {_reply(data)}")
        return data

    def list_folders(self) -> list[tuple[str, set[str]]]:
        """Return (name, flags) of every folder; flags include special uses."""
        typ, data = self.imap.list()
        self._check(typ, data, "LIST")
        folders = []
        for line in data:
            if not isinstance(line, bytes):
                continue
            match = _LIST_LINE.match(line)
            if not match:
                continue
            name = match.group("name").decode("utf-8", "replace")
            if name.startswith('"') and name.endswith('"'):
                name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            flags = set(match.group("flags").decode().split())
            folders.append((name, flags))
        return folders

    def select(self, folder: str, *, readonly: bool = False) -> int:
        """Select ``folder`` (EXAMINE when ``readonly``) and return its UIDVALIDITY."""
        typ, data = self.imap.select(_quote(folder), readonly=readonly)
        if typ != "OK":
            names = ", ".join(sorted(name for name, _ in self.list_folders()))
            raise MailboxError(
                f"Folder {folder!r} cannot be opened ({_reply(data)}); existing folders: {names}"
            )
        _, values = self.imap.response("UIDVALIDITY")
        if not values or values[0] is None:
            raise MailboxError(f"The server sent no UIDVALIDITY for {folder!r}")
        self.uidvalidity = int(values[0])
        return self.uidvalidity

    def search_uids(self, *, unseen_only: bool = False, since: date | None = None) -> list[int]:
        """Return the folder's UIDs, optionally only unseen ones or those since a day.

        IMAP's SINCE compares dates in the server's time zone, so callers that
        need an exact cut-off check INTERNALDATE as well.
        """
        criteria = ["UNSEEN"] if unseen_only else []
        if since is not None:
            criteria += ["SINCE", since.strftime("%d-%b-%Y")]
        typ, data = self.imap.uid("SEARCH", *(criteria or ["ALL"]))
        self._check(typ, data, "UID SEARCH")
        return sorted(int(uid) for uid in _text(data).split())

    def internal_dates(self, uids: Sequence[int]) -> dict[int, datetime]:
        """Return the time each message arrived in the mailbox (INTERNALDATE)."""
        dates: dict[int, datetime] = {}
        for chunk in _chunks(uids, 500):
            typ, data = self.imap.uid("FETCH", _uid_set(chunk), "(INTERNALDATE)")
            self._check(typ, data, "UID FETCH INTERNALDATE")
            for item in data:
                line = item[0] if isinstance(item, tuple) else item
                if not isinstance(line, bytes):
                    continue
                uid = _FETCH_UID.search(line)
                parsed = imaplib.Internaldate2tuple(line)
                if uid and parsed:
                    dates[int(uid.group(1))] = datetime.fromtimestamp(time.mktime(parsed), UTC)
        return dates

    def move(self, uids: Sequence[int], folder: str) -> CopiedUids | None:
        """Move exactly ``uids`` to ``folder`` (UID MOVE, or COPY then expunge).

        Returns the messages' UIDs in ``folder`` when the server reports them
        (COPYUID, which servers with UIDPLUS send), else None.
        """
        if not uids:
            return None
        uid_set = _uid_set(uids)
        # imaplib keeps untagged responses until they are read, so drop an old COPYUID.
        self.imap.response("COPYUID")
        if "MOVE" in self.imap.capabilities:
            typ, data = self.imap.uid("MOVE", uid_set, _quote(folder))
            self._check(typ, data, f"UID MOVE to {folder!r}")
            return self._copied_uids()
        typ, data = self.imap.uid("COPY", uid_set, _quote(folder))
        self._check(typ, data, f"UID COPY to {folder!r}")
        copied = self._copied_uids()
        self.delete(uids)
        return copied

    def _copied_uids(self) -> CopiedUids | None:
        _, values = self.imap.response("COPYUID")
        if not values or not isinstance(values[-1], bytes):
            return None
        return parse_copyuid(values[-1])

    def ensure_folder(self, folder: str) -> bool:
        """Create ``folder`` and subscribe to it unless it exists; return True if created.

        Raises MailboxError naming the folder and the server's reply when
        CREATE fails.
        """
        typ, data = self.imap.list('""', _quote(folder))
        self._check(typ, data, f"LIST {folder!r}")
        if any(isinstance(line, bytes) for line in data):
            return False
        typ, data = self.imap.create(_quote(folder))
        if typ != "OK":
            if "ALREADYEXISTS" in _text(data).upper():
                return False  # another client created it a moment ago
            raise MailboxError(
                f"Folder {folder!r} does not exist, and creating it failed: {_reply(data)}"
            )
        # Many mail programs show only subscribed folders; the folder works without it.
        typ, data = self.imap.subscribe(_quote(folder))
        if typ != "OK":
            logger.info("SUBSCRIBE %r failed: %s", folder, _reply(data))
        return True

    def has_uid(self, uid: int) -> bool:
        """Return True when the selected folder contains ``uid``."""
        typ, data = self.imap.uid("SEARCH", "UID", str(uid))
        self._check(typ, data, "UID SEARCH UID")
        return str(uid) in _text(data).split()

    def search_message_id(self, message_id: str) -> list[int]:
        """Return the UIDs of the selected folder's messages with this Message-ID header."""
        typ, data = self.imap.uid("SEARCH", "HEADER", "Message-ID", _quote(message_id))
        self._check(typ, data, "UID SEARCH HEADER Message-ID")
        return sorted(int(uid) for uid in _text(data).split())

    def mark_seen(self, uids: Sequence[int]) -> None:
        if not uids:
            return
        typ, data = self.imap.uid("STORE", _uid_set(uids), "+FLAGS.SILENT", r"(\Seen)")
        self._check(typ, data, "UID STORE \\Seen")

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """Return RFC822.SIZE per UID, so large messages can be fetched alone."""
        sizes: dict[int, int] = {}
        for chunk in _chunks(uids, 500):
            typ, data = self.imap.uid("FETCH", _uid_set(chunk), "(RFC822.SIZE)")
            self._check(typ, data, "UID FETCH RFC822.SIZE")
            for item in data:
                line = item[0] if isinstance(item, tuple) else item
                if not isinstance(line, bytes):
                    continue
                uid, size = _FETCH_UID.search(line), _FETCH_SIZE.search(line)
                if uid and size:
                    sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """Fetch whole messages in one round trip, without setting \\Seen."""
        if not uids:
            return []
        typ, data = self.imap.uid("FETCH", _uid_set(uids), "(BODY.PEEK[])")
        self._check(typ, data, "UID FETCH")
        messages = []
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                match = _FETCH_UID.search(item[0])
                if match:
                    messages.append(FetchedMessage(int(match.group(1)), item[1]))
        return messages

    def fetch_into(
        self, uid: int, out: ByteSink, piece_bytes: int = FETCH_PIECE_BYTES
    ) -> int | None:
        """Fetch one message in pieces into ``out``, without setting \\Seen.

        Returns the message size in bytes, or None when no message has ``uid``,
        for example because another client expunged it, possibly while its pieces
        were arriving. Then ``out`` may have received part of it. The bytes are
        those that a whole ``BODY.PEEK[]`` returns. Raises MailboxError when the
        server sends a piece that was not requested.
        """
        offset = 0
        while True:
            typ, data = self.imap.uid("FETCH", str(uid), f"(BODY.PEEK[]<{offset}.{piece_bytes}>)")
            self._check(typ, data, "UID FETCH BODY.PEEK[]<offset.length>")
            piece = _partial_body(data, uid, offset)
            if piece is None:
                return None
            out.write(piece)
            offset += len(piece)
            # The server sends fewer bytes than requested only at the end of the message.
            if len(piece) < piece_bytes:
                return offset

    def delete(self, uids: Sequence[int], trash_folder: str | None = None) -> None:
        """Remove exactly ``uids``: move them to ``trash_folder``, or expunge them."""
        if not uids:
            return
        uid_set = _uid_set(uids)
        if trash_folder is not None:
            self.move(uids, trash_folder)
            return
        typ, data = self.imap.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
        self._check(typ, data, "UID STORE \\Deleted")
        if "UIDPLUS" in self.imap.capabilities:
            typ, data = self.imap.uid("EXPUNGE", uid_set)
            self._check(typ, data, "UID EXPUNGE")
        else:
            # NOTE: without UIDPLUS, EXPUNGE also removes messages that another
            # client flagged \Deleted; servers in use today all offer UIDPLUS.
            typ, data = self.imap.expunge()
            self._check(typ, data, "EXPUNGE")

    def trash_folder(self) -> str | None:
        """Return the folder whose special use is \\Trash, found by flag, not name."""
        for name, flags in self.list_folders():
            if "\\Trash" in flags:
                return name
        return None


def _partial_body(data: list[object], uid: int, offset: int) -> bytes | None:
    """Return the piece of ``uid`` in a partial FETCH response, or None if it is gone.

    Past the end of a message the server may send an empty quoted string in place of
    a literal, which imaplib returns as a plain line. For a message that another
    session expunged meanwhile, Dovecot 2.3 sends NIL, or no FETCH response at all.
    """
    for item in data:
        line = item[0] if isinstance(item, tuple) else item
        if not isinstance(line, bytes):
            continue
        match = _FETCH_UID.search(line)
        origin = _FETCH_PARTIAL.search(line)
        # Other FETCH responses, such as a flag change by another client, may arrive too.
        if match is None or int(match.group(1)) != uid or origin is None:
            continue
        if int(origin.group(1)) != offset:
            raise MailboxError(
                f"The server sent message UID {uid} from byte {origin.group(1).decode()} "
                f"where byte {offset} was requested"
            )
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
        if line[origin.end() :].lstrip().startswith(b"NIL"):
            return None
        return b""
    return None


def _uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(uid) for uid in uids)


def _expand_uid_set(text: str) -> list[int]:
    """Expand an IMAP UID set such as ``4:6,9`` in its order, each range ascending."""
    uids: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        low, high = sorted((int(first), int(last or first)))
        uids.extend(range(low, high + 1))
    return uids


def parse_copyuid(value: bytes) -> CopiedUids | None:
    """Parse a COPYUID response code's ``uidvalidity source-set destination-set``.

    Returns None for text that does not have that shape or whose sets differ in length.
    """
    parts = value.decode("ascii", "replace").split()
    try:
        uidvalidity = int(parts[0])
        sources = _expand_uid_set(parts[1])
        destinations = _expand_uid_set(parts[2])
    except (IndexError, ValueError):
        return None
    if len(sources) != len(destinations):
        return None
    return CopiedUids(uidvalidity, dict(zip(sources, destinations, strict=True)))


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def open_mailbox(
    settings: ImapSettings,
    *,
    password: str | None = None,
    access_token: str | None = None,
    readonly: bool = False,
) -> MailboxSession:
    """Connect with TLS, log in, and select the folder (read-only when asked)."""
    imap = _connect(settings)
    try:
        _authenticate(imap, settings, password, access_token)
        session = MailboxSession(imap, settings)
        session.select(settings.folder, readonly=readonly)
    except BaseException:
        with contextlib.suppress(OSError):
            imap.shutdown()
        raise
    return session
