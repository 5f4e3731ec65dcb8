"""Walking a parsed message and deciding which MIME parts become files."""

from __future__ import annotations

import errno
import io
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email import errors
from email.feedparser import BytesFeedParser
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from pathlib import Path
from typing import BinaryIO

from .archives import ArchiveRejected, ZipUnpacker, is_zip
from .headers import decode_header_text, main_value, raw_header, read_message_info
from .models import ExtractedFile, ExtractionOptions, ExtractionResult
from .names import guess_content_type, normalize_content_type, part_filename, sanitize_name
from .output import Blob, FileSink
from .spool import NO_SPOOL, READ_CHUNK_BYTES, SpooledBodies, detect_linesep, parse_file
from .tnef import TnefError, is_tnef, unpack_tnef
from .transfer import (
    ByteSink,
    DecodeOutcome,
    payload_text,
    transfer_encoding,
    write_payload,
)

MAX_NESTED_MESSAGES = 5
"""Attached messages inside attached messages are unpacked down to this depth."""

MAX_MULTIPART_DEPTH = 50
"""Multipart containers nested deeper than this within one message are skipped, which
keeps recursion far below Python's limit on hostile input."""

_ATTACHED_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_SIGNATURE_TYPES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)
_CID_REFERENCE = re.compile(rb"""cid:([^\s"'<>()]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class _Context:
    """Position of a part in the message tree and the flags it inherits from its parents."""

    message_depth: int
    content_ids: frozenset[str]
    """Content-IDs that the HTML body of the enclosing message refers to with cid:."""
    in_related: bool = False
    container_depth: int = 0
    open_ended: bool = False
    """The part is last in a multipart whose closing boundary is missing, so the
    message may end inside it."""


def _label(number: str, name: str | None) -> str:
    display = sanitize_name(name or "")
    return f"Part {number} ({display})" if display else f"Part {number}"


def _child_number(parent: str, index: int) -> str:
    """Return the IMAP section number of child ``index`` (1-based) of section ``parent``."""
    return f"{parent}.{index}" if parent else str(index)


def _normalize_content_id(value: str | None) -> str | None:
    if not value:
        return None
    return value.strip().strip("<>").strip().lower() or None


def _body_parts(message: Message) -> Iterator[Message]:
    """Yield the leaf parts of ``message`` without entering attached messages."""
    stack = [message]
    while stack:
        part = stack.pop()
        if part.get_content_type() in _ATTACHED_MESSAGE_TYPES:
            continue
        children = part.get_payload() if part.is_multipart() else None
        if isinstance(children, list):
            stack.extend(child for child in reversed(children) if isinstance(child, Message))
        else:
            yield part


def _referenced_content_ids(message: Message, bodies: SpooledBodies) -> frozenset[str]:
    """Collect the cid: references of the message's HTML bodies, lowercased."""
    found: set[str] = set()
    for part in _body_parts(message):
        if part.get_content_type() != "text/html":
            continue
        if main_value(raw_header(part, "content-disposition")) == "attachment":
            continue
        bodies.expand_part(part)
        html = part.get_payload(decode=True)
        if not isinstance(html, bytes):
            continue
        for match in _CID_REFERENCE.finditer(html):
            reference = urllib.parse.unquote(match.group(1).decode("ascii", "replace"))
            found.add(reference.lower())
    return frozenset(found)


def _flatten(message: Message, out: ByteSink, linesep: str) -> None:
    """Serialize a parsed message back to bytes.

    With compat32, no header refolding and the original line ending, an unmodified
    message comes back byte for byte.
    """
    policy = compat32.clone(linesep=linesep)
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=policy).flatten(message)


def _parse(source: bytes | BinaryIO) -> tuple[Message, str, SpooledBodies]:
    """Parse a raw message and return it with its line ending and its spooled bodies.

    A message in a file is parsed with parse_file, so its long bodies stay in the file.
    Bytes are fed to the parser in chunks, which keeps it from making a full str copy of
    the input next to the parsed tree.

    NOTE: while the stdlib parser collects the lines of a large part, its traced memory
    peaks at about 2.8 times the message size (measured with tracemalloc for a 12 MB
    base64 attachment, see test_large_attachment_memory), so pass large messages as a
    file.
    """
    if not isinstance(source, bytes | bytearray | memoryview):
        return parse_file(source)
    parser = BytesFeedParser(policy=compat32)
    view = memoryview(source)
    linesep = detect_linesep(bytes(view[:READ_CHUNK_BYTES]))
    for start in range(0, len(view), READ_CHUNK_BYTES):
        parser.feed(bytes(view[start : start + READ_CHUNK_BYTES]))
    return parser.close(), linesep, NO_SPOOL


def _parse_bytes(data: bytes) -> Message:
    parser = BytesFeedParser(policy=compat32)
    parser.feed(data)
    return parser.close()


@dataclass(frozen=True)
class _Leaf:
    """A non-multipart part that became a file candidate."""

    part: Message
    number: str
    name: str | None
    content_type: str
    origin: str
    open_ended: bool


class _Extractor:
    """One run of extract_files over one message tree."""

    def __init__(
        self, sink: FileSink, options: ExtractionOptions, linesep: str, bodies: SpooledBodies
    ) -> None:
        self.sink = sink
        self.options = options
        self.linesep = linesep
        self.bodies = bodies

    def walk_message(self, message: Message, number: str, message_depth: int) -> None:
        """Walk a message whose own section number is ``number`` ("" for the top level)."""
        context = _Context(
            message_depth=message_depth,
            content_ids=_referenced_content_ids(message, self.bodies),
        )
        if message.is_multipart() and message.get_content_type().startswith("multipart/"):
            self._walk_entity(message, number, context)
        else:
            self._walk_entity(message, _child_number(number, 1), context)

    def _walk_entity(self, part: Message, number: str, context: _Context) -> None:
        try:
            self._dispatch(part, number, context)
        except OSError:
            raise
        except Exception as error:
            # A part that breaks the code below must not cost the other parts.
            self.sink.report(
                f"Part {number}: could not be read ({type(error).__name__}: {error}), skipped"
            )

    def _dispatch(self, part: Message, number: str, context: _Context) -> None:
        content_type = part.get_content_type()
        if content_type in _ATTACHED_MESSAGE_TYPES:
            self._handle_attached_message(part, number, context)
        elif part.is_multipart():
            self._walk_children(part, number, context)
        elif content_type.startswith("multipart/"):
            self.sink.report(
                f"Part {number}: multipart body without its boundary, contents skipped"
            )
        else:
            self._handle_leaf(part, number, context)

    def _walk_children(self, container: Message, number: str, context: _Context) -> None:
        if context.container_depth >= MAX_MULTIPART_DEPTH:
            self.sink.report(
                f"Part {number}: multiparts nested deeper than {MAX_MULTIPART_DEPTH} levels, "
                "contents skipped"
            )
            return
        children = container.get_payload()
        assert isinstance(children, list)
        content_type = container.get_content_type()
        unterminated = context.open_ended or any(
            isinstance(defect, errors.CloseBoundaryNotFoundDefect) for defect in container.defects
        )
        signed = content_type == "multipart/signed"
        child_context = replace(
            context,
            in_related=context.in_related or content_type == "multipart/related",
            container_depth=context.container_depth + 1,
        )
        for index, child in enumerate(children, start=1):
            if not isinstance(child, Message):
                continue
            if signed and index == 2 and child.get_content_type() in _SIGNATURE_TYPES:
                continue
            last = index == len(children)
            self._walk_entity(
                child,
                _child_number(number, index),
                replace(child_context, open_ended=unterminated and last),
            )

    def _report_name_notes(self, number: str, name: str | None, notes: list[str]) -> None:
        for note in notes:
            self.sink.report(f"{_label(number, name)}: file name: {note}")

    def _handle_leaf(self, part: Message, number: str, context: _Context) -> None:
        notes: list[str] = []
        name = part_filename(part, notes)
        self._report_name_notes(number, name, notes)

        content_type = part.get_content_type()
        disposition = main_value(raw_header(part, "content-disposition"))
        is_attachment = disposition == "attachment"
        content_id = _normalize_content_id(raw_header(part, "content-id"))
        referenced = content_id is not None and content_id in context.content_ids
        # Images that the HTML body shows (signatures, logos) are not project files.
        body_image = content_type.startswith("image/") and (
            referenced or (context.in_related and not is_attachment)
        )
        body_text = content_type.startswith("text/") and not is_attachment and name is None

        if body_text or (body_image and not self.options.include_inline_images):
            if context.open_ended:
                self.sink.report(
                    f"{_label(number, name)}: closing MIME boundary missing, "
                    "the message may be truncated"
                )
            return

        leaf = _Leaf(
            part=part,
            number=number,
            name=name,
            content_type=normalize_content_type(content_type, name or ""),
            origin="inline" if body_image or disposition == "inline" else "attachment",
            open_ended=context.open_ended,
        )
        if is_tnef(content_type, name):
            self._handle_tnef(leaf)
        elif self.options.unpack_zip and is_zip(content_type, name):
            self._handle_zip(leaf)
        else:
            decoded = self._decode(leaf)
            if decoded is not None:
                self._add(leaf, *decoded)

    def _decode(self, leaf: _Leaf) -> tuple[Blob, DecodeOutcome] | None:
        """Decode a leaf into a blob, or return None if the message ends inside it."""
        with self.sink.new_blob() as blob:
            outcome = write_payload(leaf.part, blob, self.bodies)
        if leaf.open_ended and outcome.ended_inside_group:
            blob.discard()
            self.sink.report(
                f"{_label(leaf.number, leaf.name)}: the message ends inside this part, "
                "the incomplete file was skipped"
            )
            return None
        return blob, outcome

    def _add(self, leaf: _Leaf, blob: Blob, outcome: DecodeOutcome) -> ExtractedFile:
        """Add a decoded leaf to the result and report the damage found in it."""
        extracted = self.sink.add(blob, leaf.name, leaf.content_type, leaf.origin)
        self._report_outcome(leaf, outcome, extracted.name)
        return extracted

    def _report_outcome(self, leaf: _Leaf, outcome: DecodeOutcome, name: str | None) -> None:
        label = _label(leaf.number, name)
        if outcome.invalid_base64:
            self.sink.report(f"{label}: invalid base64, decoded what was readable")
        if outcome.unknown_encoding:
            self.sink.report(
                f"{label}: unknown transfer encoding {outcome.unknown_encoding!r}, "
                "saved the data undecoded"
            )
        if leaf.open_ended:
            self.sink.report(
                f"{label}: closing MIME boundary missing after this part, it may be incomplete"
            )

    def _handle_tnef(self, leaf: _Leaf) -> None:
        """Replace winmail.dat by its attachments, or keep it whole if unpacking fails."""
        decoded = self._decode(leaf)
        if decoded is None:
            return
        blob, outcome = decoded
        try:
            files, has_body = unpack_tnef(blob.path.read_bytes(), MAX_NESTED_MESSAGES)
        except TnefError as error:
            extracted = self._add(leaf, blob, outcome)
            self.sink.report(
                f"{_label(leaf.number, extracted.name)}: could not unpack TNEF ({error}), "
                "kept the file as it is"
            )
            return
        if not files and not has_body:
            extracted = self._add(leaf, blob, outcome)
            self.sink.report(
                f"{_label(leaf.number, extracted.name)}: TNEF contains neither attachments "
                "nor text, kept the file as it is"
            )
            return

        # winmail.dat is replaced by its attachments. With none but a body, it carried only
        # the formatted message text, which is no project file.
        blob.discard()
        self._report_outcome(leaf, outcome, leaf.name)
        for tnef_file in files:
            with self.sink.new_blob() as member_blob:
                member_blob.write(tnef_file.data)
            content_type = normalize_content_type(
                (tnef_file.content_type or "").lower(), tnef_file.name or ""
            )
            extracted = self.sink.add(member_blob, tnef_file.name, content_type, "tnef")
            if not tnef_file.checksum_ok:
                self.sink.report(
                    f"{_label(leaf.number, leaf.name)}: TNEF checksum of {extracted.name!r} "
                    "is wrong, the file may be damaged"
                )

    def _handle_zip(self, leaf: _Leaf) -> None:
        """Replace an archive by its members, or keep it whole if it breaks a limit."""
        decoded = self._decode(leaf)
        if decoded is None:
            return
        blob, outcome = decoded
        unpacker = ZipUnpacker(self.sink, self.options)
        try:
            unpacker.unpack(blob.path)
        except ArchiveRejected as rejected:
            unpacker.discard_all()
            extracted = self._add(leaf, blob, outcome)
            self.sink.report(
                f"{_label(leaf.number, extracted.name)}: {rejected}, kept the archive whole"
            )
            return

        for member, member_blob in unpacker.extracted:
            self.sink.add(member_blob, member, guess_content_type(member), "zip")
        unpacker.discard_nested_archives()
        blob.discard()
        self._report_outcome(leaf, outcome, leaf.name)
        for note in unpacker.notes:
            self.sink.report(f"{_label(leaf.number, leaf.name)}: {note}")

    def _handle_attached_message(self, part: Message, number: str, context: _Context) -> None:
        """Keep an attached message as .eml and extract the files inside it."""
        notes: list[str] = []
        name = part_filename(part, notes)
        self._report_name_notes(number, name, notes)
        label = _label(number, name)

        payload = part.get_payload() if part.is_multipart() else None
        inner = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(inner, Message):
            self.sink.report(f"{label}: attached message is empty, skipped")
            return

        encoded: bytes | None = None
        encoding = transfer_encoding(part)
        if encoding in ("base64", "quoted-printable"):
            encoded, outcome = self._decode_encoded_message(inner, encoding)
            if outcome.invalid_base64:
                self.sink.report(f"{label}: invalid base64, decoded what was readable")
            inner = _parse_bytes(encoded)

        too_deep = context.message_depth + 1 > MAX_NESTED_MESSAGES
        if self.options.keep_nested_message or too_deep:
            self._save_message(inner, encoded, name, number, context.open_ended)
        if too_deep:
            self.sink.report(
                f"{label}: attached messages nested deeper than {MAX_NESTED_MESSAGES} levels, "
                "kept this one whole"
            )
            return
        self.walk_message(inner, number, context.message_depth + 1)

    def _flatten(self, message: Message, out: ByteSink) -> None:
        """Write ``message`` as it arrived, with the placeholders of the parse expanded."""
        writer = self.bodies.writer(out)
        _flatten(message, writer, self.linesep)
        writer.close()

    def _decode_encoded_message(self, inner: Message, encoding: str) -> tuple[bytes, DecodeOutcome]:
        """Undo a transfer encoding that RFC 2046 forbids on message/rfc822 but clients use.

        The parser read the encoded text as a message, usually one without headers whose
        body is the base64 text, so that text is decoded here and parsed again.

        NOTE: the decoded message is parsed in memory, even from a spooled message, so a
        large attached message encoded this way costs several times its size.
        """
        if inner.keys():
            buffer = io.BytesIO()
            self._flatten(inner, buffer)
            text = buffer.getvalue().decode("ascii", "surrogateescape")
        else:
            text = self.bodies.expand(payload_text(inner) or "")
        carrier = Message()
        carrier["Content-Transfer-Encoding"] = encoding
        carrier.set_payload(text)
        decoded = io.BytesIO()
        outcome = write_payload(carrier, decoded, NO_SPOOL)
        return decoded.getvalue(), outcome

    def _save_message(
        self,
        inner: Message,
        encoded: bytes | None,
        name: str | None,
        number: str,
        open_ended: bool,
    ) -> None:
        notes: list[str] = []
        subject = decode_header_text(raw_header(inner, "subject"), notes)
        for note in notes:
            self.sink.report(f"Part {number}: subject of the attached message: {note}")
        file_name = name or subject
        if file_name and not file_name.strip().lower().endswith(".eml"):
            file_name = file_name.strip() + ".eml"

        with self.sink.new_blob() as blob:
            if encoded is not None:
                blob.write(encoded)
            else:
                self._flatten(inner, blob)
        self.sink.add(blob, file_name, "message/rfc822", "nested-message")
        if open_ended:
            self.sink.report(
                f"{_label(number, file_name)}: closing MIME boundary missing, "
                "the attached message may be incomplete"
            )


DEFAULT_OPTIONS = ExtractionOptions()


def extract_files(
    raw: bytes | BinaryIO, workdir: Path, options: ExtractionOptions = DEFAULT_OPTIONS
) -> ExtractionResult:
    """Extract the files of one raw e-mail into ``workdir``.

    ``raw`` is the message's bytes or a seekable binary file positioned at its start.
    A file must stay open and unchanged until this returns, and its long bodies are
    decoded from the file without holding them in memory.

    Damaged parts are worked around and described in ``problems``. The only exceptions
    are OSError for a missing work directory or failed reads and writes, and errors
    raised while reading ``raw``.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "work directory not found", str(workdir))

    message, linesep, bodies = _parse(raw)
    notes: list[str] = []
    info = read_message_info(message, notes)
    sink = FileSink(workdir, info.message_id)
    for note in notes:
        sink.report(note)

    _Extractor(sink, options, linesep, bodies).walk_message(message, "", 0)
    return ExtractionResult(info=info, files=sink.files, problems=sink.problems)
