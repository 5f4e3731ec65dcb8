"""Large messages against a real Dovecot: fetched in pieces into a file, extracted from it.

A message larger than LARGE_MESSAGE_BYTES takes another path through a connector run
than a batch of small ones. These tests check that it yields the same files, names,
problems and content hash as the whole message in memory would.
"""

from __future__ import annotations

import base64
import hashlib
import random
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
import sqlalchemy as sa

from extraction import extract_files
from imapsession import ImapSettings, MailboxSession, open_mailbox
from imapsession.session import FETCH_PIECE_BYTES
from intake import run_connector
from intake.email_source import LARGE_MESSAGE_BYTES
from intake.preview import preview_connector
from models import (
    Connector,
    ConnectorStore,
    Job,
    LedgerState,
    ProcessedMessage,
    RunStatus,
    SourceLocation,
    StoreRole,
)

from .mailhelpers import PDF_BYTES, message_with_files
from .servers import PASSWORD_USER, PASSWORD_USER_PASSWORD, MailStack
from .test_intake import (  # noqa: F401  (fixtures)
    password_connector_id,
    settings,
    stack,
)

CZECH_NAME = "Překlad smlouvy – příloha č. 1.docx"
DAMAGE_NOTE = "Job created, but part of the e-mail was damaged: "
# Random bytes of this size make a message of about 1.37 times as much in base64,
# larger than LARGE_MESSAGE_BYTES and more than two fetch pieces.
LARGE_DATA_BYTES = 2 * FETCH_PIECE_BYTES + 12_345


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def connector_id(services, seeded, stack: MailStack) -> int:
    """A password connector on the STARTTLS port, so no consent is needed."""
    return password_connector_id(services, stack, "Large messages")


class FetchLog:
    """Records the batch fetches and the pieces of each partial fetch of a run."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.pieces: dict[int, list[int]] = {}


@pytest.fixture
def fetch_log(monkeypatch: pytest.MonkeyPatch) -> FetchLog:
    log = FetchLog()
    real_fetch = MailboxSession.fetch
    real_fetch_into = MailboxSession.fetch_into

    def fetch(self, uids):  # type: ignore[no-untyped-def]
        log.batches.append(list(uids))
        return real_fetch(self, uids)

    def fetch_into(self, uid, out, piece_bytes=FETCH_PIECE_BYTES):  # type: ignore[no-untyped-def]
        sizes = log.pieces.setdefault(uid, [])

        class Recorder:
            def write(self, data: bytes) -> int:
                sizes.append(len(data))
                return out.write(data)

        return real_fetch_into(self, uid, Recorder(), piece_bytes)

    monkeypatch.setattr(MailboxSession, "fetch", fetch)
    monkeypatch.setattr(MailboxSession, "fetch_into", fetch_into)
    return log


def _run(services, connector_id: int):  # type: ignore[no-untyped-def]
    outcome = run_connector(services.intake_context(), connector_id, "manual")
    assert outcome is not None
    return outcome


def _stored_files(services) -> list[tuple[str, str, bytes]]:  # type: ignore[no-untyped-def]
    """Return (job name, file name, stored bytes) of every job file, in job order."""
    with services.db.session() as session:
        return [
            (job.name, stored.original_name, services.store.path(stored.storage_name).read_bytes())
            for job in session.scalars(sa.select(Job).order_by(Job.id))
            for stored in job.files
        ]


def _multipart(boundary: str, parts: list[tuple[str, bytes]], *, closed: bool = True) -> bytes:
    """Build a multipart/mixed message of (part headers, encoded body) pairs by hand."""
    lines = [
        "From: client@example.org",
        "To: office@example.com",
        "Subject: Large order",
        f"Message-ID: {make_msgid(domain='example.org')}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
    ]
    raw = "\r\n".join(lines).encode() + b"\r\n"
    for headers, body in parts:
        raw += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + body
    if closed:
        raw += f"--{boundary}--\r\n".encode()
    return raw


def _base64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _attachment_headers(name: str) -> str:
    return (
        f'Content-Type: application/octet-stream; name="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="{name}"'
    )


def _open(stack: MailStack) -> MailboxSession:
    imap_settings = ImapSettings(
        host="127.0.0.1",
        port=stack.dovecot.imap_port,
        use_ssl=False,
        username=PASSWORD_USER,
        folder="INBOX",
        timeout=10.0,
        ca_file=stack.dovecot.ca_file,
    )
    return open_mailbox(imap_settings, password=PASSWORD_USER_PASSWORD)


def test_fetch_into_writes_pieces(stack: MailStack) -> None:
    raw = message_with_files("Pieces", [("big.bin", random_bytes(300_000, 1), "application/pdf")])
    (uid,) = stack.dovecot.append_many(PASSWORD_USER, [raw])
    whole = stack.dovecot.fetch(PASSWORD_USER, uid)
    piece_bytes = 64 * 1024

    pieces: list[bytes] = []

    class Collector:
        def write(self, data: bytes) -> int:
            pieces.append(data)
            return len(data)

    with _open(stack) as mailbox:
        size = mailbox.fetch_into(uid, Collector(), piece_bytes)

    assert size == len(whole)
    assert b"".join(pieces) == whole
    assert len(pieces) == len(whole) // piece_bytes + 1
    assert {len(piece) for piece in pieces[:-1]} == {piece_bytes}
    assert len(pieces[-1]) < piece_bytes


def test_fetch_into_piece_size_divides_message(stack: MailStack) -> None:
    raw = message_with_files("Exact", [("a.pdf", PDF_BYTES, "application/pdf")])
    (uid,) = stack.dovecot.append_many(PASSWORD_USER, [raw])
    whole = stack.dovecot.fetch(PASSWORD_USER, uid)

    pieces: list[bytes] = []

    class Collector:
        def write(self, data: bytes) -> int:
            pieces.append(data)
            return len(data)

    with _open(stack) as mailbox:
        size = mailbox.fetch_into(uid, Collector(), len(whole))

    assert size == len(whole)
    assert pieces == [whole, b""]


def test_fetch_into_missing_uid(stack: MailStack) -> None:
    stack.dovecot.append_many(PASSWORD_USER, [message_with_files("One", [])])

    class Collector:
        def write(self, data: bytes) -> int:
            raise AssertionError("no data expected")

    with _open(stack) as mailbox:
        assert mailbox.fetch_into(999_999, Collector()) is None


def test_fetch_into_message_expunged_meanwhile(stack: MailStack) -> None:
    raw = message_with_files("Gone", [("big.bin", random_bytes(300_000, 9), "application/pdf")])
    (uid,) = stack.dovecot.append_many(PASSWORD_USER, [raw])
    pieces: list[int] = []

    class ExpungeAfterFirstPiece:
        def write(self, data: bytes) -> int:
            pieces.append(len(data))
            if len(pieces) == 1:
                with stack.dovecot.master_session(PASSWORD_USER) as other:
                    other.select("INBOX")
                    other.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
                    other.expunge()
            return len(data)

    with _open(stack) as mailbox:
        size = mailbox.fetch_into(uid, ExpungeAfterFirstPiece(), 64 * 1024)

    assert size is None
    assert pieces == [64 * 1024]


def test_fetch_into_keeps_message_unseen(stack: MailStack) -> None:
    raw = message_with_files("Unseen", [("big.bin", random_bytes(100_000, 2), "application/pdf")])
    (uid,) = stack.dovecot.append_many(PASSWORD_USER, [raw])

    class Discard:
        def write(self, data: bytes) -> int:
            return len(data)

    with _open(stack) as mailbox:
        assert mailbox.fetch_into(uid, Discard(), 16 * 1024) is not None
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", str(uid), "(FLAGS)")
    assert b"\\Seen" not in data[0]


def test_large_message_makes_exact_files(
    services,
    connector_id: int,
    stack: MailStack,
    fetch_log: FetchLog,
) -> None:
    big = random_bytes(LARGE_DATA_BYTES, 3)
    small = random_bytes(5_000, 4)
    large_raw = message_with_files(
        "Contract",
        [
            (CZECH_NAME, big, "application/octet-stream"),
            ("Leaflet.pdf", PDF_BYTES, "application/pdf"),
        ],
    )
    small_raw = message_with_files("Label", [("Label.bin", small, "application/octet-stream")])
    assert len(large_raw) > LARGE_MESSAGE_BYTES
    large_uid, small_uid = stack.dovecot.append_many(PASSWORD_USER, [large_raw, small_raw])
    stored_large = stack.dovecot.fetch(PASSWORD_USER, large_uid)

    outcome = _run(services, connector_id)

    assert outcome.status == RunStatus.SUCCEEDED, outcome.problems
    assert outcome.jobs_created == 3
    assert fetch_log.batches == [[small_uid]]
    assert list(fetch_log.pieces) == [large_uid]
    assert sum(fetch_log.pieces[large_uid]) == len(stored_large)
    assert len(fetch_log.pieces[large_uid]) == len(stored_large) // FETCH_PIECE_BYTES + 1
    assert _stored_files(services) == [
        (CZECH_NAME, CZECH_NAME, big),
        ("Leaflet.pdf", "Leaflet.pdf", PDF_BYTES),
        ("Label.bin", "Label.bin", small),
    ]
    with services.db.session() as session:
        ledger = session.scalars(sa.select(ProcessedMessage).order_by(ProcessedMessage.uid)).all()
        assert [row.uid for row in ledger] == [large_uid, small_uid]
        assert ledger[0].content_hash == hashlib.sha256(stored_large).hexdigest()
        assert {row.state for row in ledger} == {LedgerState.DELETED}
    assert stack.dovecot.list_uids(PASSWORD_USER) == []


def test_large_message_repeated_makes_no_second_job(
    services,
    connector_id: int,
    stack: MailStack,
    fetch_log: FetchLog,
) -> None:
    raw = message_with_files(
        "Resent", [("again.bin", random_bytes(LARGE_DATA_BYTES, 5), "application/pdf")]
    )
    stack.dovecot.append_many(PASSWORD_USER, [raw])
    assert _run(services, connector_id).jobs_created == 1
    with services.db.session() as session:
        # Pretend the job was made under an older UIDVALIDITY of the folder.
        session.execute(sa.update(ProcessedMessage).values(uidvalidity=1, uid=999_999))
        session.commit()
    (uid,) = stack.dovecot.append_many(PASSWORD_USER, [raw])

    outcome = _run(services, connector_id)

    assert uid in fetch_log.pieces
    assert outcome.jobs_created == 0
    assert outcome.messages_deleted == 1
    with services.db.session() as session:
        assert len(session.scalars(sa.select(Job)).all()) == 1


def _truncated_inside_part() -> tuple[bytes, list[str]]:
    cut_body = _base64_lines(random_bytes(LARGE_DATA_BYTES, 6))
    # Ten characters into a 76-character line: inside a 4-character group.
    cut_body = cut_body[: 78 * 20_000 + 10]
    raw = _multipart(
        "cut",
        [
            ('Content-Type: text/plain; charset="utf-8"', b"Two files.\r\n"),
            (_attachment_headers("complete.pdf"), _base64_lines(PDF_BYTES)),
            (_attachment_headers("cut.bin"), cut_body),
        ],
        closed=False,
    )
    return raw, [
        "Part 3 (cut.bin): the message ends inside this part, the incomplete file was skipped"
    ]


def _invalid_base64_line() -> tuple[bytes, list[str]]:
    lines = _base64_lines(random_bytes(LARGE_DATA_BYTES, 7)).split(b"\r\n")
    lines[5000] = b"#### line damaged in transit ####"
    raw = _multipart(
        "bad",
        [
            ('Content-Type: text/plain; charset="utf-8"', b"One file.\r\n"),
            (_attachment_headers("damaged.bin"), b"\r\n".join(lines)),
        ],
    )
    return raw, ["Part 2 (damaged.bin): invalid base64, decoded what was readable"]


def _missing_closing_boundary() -> tuple[bytes, list[str]]:
    raw = _multipart(
        "open",
        [
            ('Content-Type: text/plain; charset="utf-8"', b"One file.\r\n"),
            (_attachment_headers("open.bin"), _base64_lines(random_bytes(LARGE_DATA_BYTES, 8))),
        ],
        closed=False,
    )
    return raw, [
        "Part 2 (open.bin): closing MIME boundary missing after this part, it may be incomplete"
    ]


@pytest.mark.parametrize(
    "build",
    [_truncated_inside_part, _invalid_base64_line, _missing_closing_boundary],
    ids=["truncated", "invalid-base64", "no-closing-boundary"],
)
def test_damaged_large_message_reported(
    services,
    connector_id: int,
    stack: MailStack,
    fetch_log: FetchLog,
    tmp_path: Path,
    build,
) -> None:
    raw, expected = build()
    assert len(raw) > LARGE_MESSAGE_BYTES
    (uid,) = stack.dovecot.append_many(PASSWORD_USER, [raw])
    stored = stack.dovecot.fetch(PASSWORD_USER, uid)
    in_memory = extract_files(stored, tmp_path)

    outcome = _run(services, connector_id)

    assert uid in fetch_log.pieces
    assert outcome.status == RunStatus.PARTIAL
    assert outcome.jobs_created == 1
    reported = [problem[4] for problem in outcome.problems]
    assert reported == [DAMAGE_NOTE + problem for problem in expected]
    assert in_memory.problems == expected
    assert [name for _job, name, _data in _stored_files(services)] == [
        extracted.name for extracted in in_memory.files
    ]


def test_quarantined_large_message_copied_whole(
    services,
    connector_id: int,
    stack: MailStack,
    fetch_log: FetchLog,
) -> None:
    message = EmailMessage()
    message["From"] = "client@example.org"
    message["To"] = PASSWORD_USER
    message["Subject"] = "Long text, no files"
    message.set_content("Bitte übersetzen.\n" * 100_000)
    raw = bytes(message)
    assert len(raw) > LARGE_MESSAGE_BYTES
    (uid,) = stack.dovecot.append_many(PASSWORD_USER, [raw])
    stored = stack.dovecot.fetch(PASSWORD_USER, uid)
    ctx = services.intake_context()
    (ctx.locations_root / "errors").mkdir(parents=True)
    with services.db.session() as session:
        connector = session.get(Connector, connector_id)
        connector.options = {"max_attempts": 1}
        session.add(
            ConnectorStore(
                connector_id=connector_id,
                role=StoreRole.ERROR,
                location=SourceLocation.FOLDER,
                path="errors",
            )
        )
        session.commit()

    outcome = _run(services, connector_id)

    assert uid in fetch_log.pieces
    assert "now quarantined" in outcome.problems[0][4]
    copies = list((ctx.locations_root / "errors").rglob("*.eml"))
    assert [copy.name for copy in copies] == ["Long text, no files.eml"]
    assert copies[0].read_bytes() == stored
    assert stack.dovecot.list_uids(PASSWORD_USER) == [uid]


def test_test_connector_reads_large_message_in_pieces(
    services,
    connector_id: int,
    stack: MailStack,
    fetch_log: FetchLog,
) -> None:
    big = random_bytes(LARGE_DATA_BYTES, 5)
    large_raw = message_with_files("Contract", [(CZECH_NAME, big, "application/octet-stream")])
    small_raw = message_with_files("Label", [("Label.bin", b"label", "application/octet-stream")])
    large_uid, small_uid = stack.dovecot.append_many(PASSWORD_USER, [large_raw, small_raw])

    preview = preview_connector(services.intake_context(), connector_id)

    assert preview.error is None
    assert [message.uid for message in preview.messages] == [large_uid, small_uid]
    assert preview.messages[0].files == [(CZECH_NAME, len(big))]
    assert preview.messages[1].files == [("Label.bin", 5)]
    assert fetch_log.batches == [[small_uid]]
    assert list(fetch_log.pieces) == [large_uid]
    assert stack.dovecot.list_uids(PASSWORD_USER) == [large_uid, small_uid]
    with services.db.session() as session:
        assert session.scalars(sa.select(Job)).all() == []
