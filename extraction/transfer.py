"""Decoding of Content-Transfer-Encoding into a file, in chunks.

A payload is decoded in chunks of CHUNK_CHARS characters, cut from the payload string
or, for a message parsed from a file, read from the file (see spool.py). So a large
attachment costs one chunk, plus its payload string if it was parsed in memory,
instead of the extra full copies that ``get_payload(decode=True)`` makes.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING, Protocol

from .headers import raw_header, unfold

if TYPE_CHECKING:
    from .spool import SpooledBodies

CHUNK_CHARS = 1024 * 1024

_WHITESPACE = str.maketrans("", "", " \t\r\n\v\f")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]+")
_BASE64_ALPHABET = str.maketrans(
    "", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
)
_PADDING = re.compile(r"=+")
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_UNENCODED = frozenset({"", "7bit", "8bit", "binary"})


class ByteSink(Protocol):
    """Anything decoded bytes can be written to: a binary file, BytesIO or a Blob."""

    def write(self, data: bytes, /) -> int: ...


@dataclass
class DecodeOutcome:
    """Damage found while decoding one payload. All fields false means a clean payload."""

    invalid_base64: bool = False
    ended_inside_group: bool = False
    """Base64 data stopped inside a 4-character group without padding. That is the
    usual sign of a message cut off in transit, though a few encoders omit padding."""
    unknown_encoding: str | None = None


class Base64Decoder:
    """Streaming base64 decoder that skips invalid characters instead of failing.

    Data after "=" padding starts a new group, so two base64 bodies that a broken
    encoder glued together both decode.
    """

    def __init__(self, out: ByteSink) -> None:
        self._out = out
        self._pending = ""
        self.invalid = False

    def feed(self, text: str) -> None:
        """Decode the complete 4-character groups in ``text`` and keep the rest."""
        text = text.translate(_WHITESPACE)
        # Deleting the alphabet and looking at what is left is several times
        # faster than a regular expression search over the whole chunk.
        if text.translate(_BASE64_ALPHABET):
            self.invalid = True
            text = _NOT_BASE64.sub("", text)
        data = self._pending + text
        if "=" in data:
            start = 0
            for padding in _PADDING.finditer(data):
                self._write_final_group(data[start : padding.start()])
                start = padding.end()
            data = data[start:]
        usable = len(data) - len(data) % 4
        if usable:
            self._out.write(binascii.a2b_base64(data[:usable]))
        self._pending = data[usable:]

    def close(self) -> bool:
        """Decode what is left and return True if the data ended inside a group."""
        ended_inside_group = bool(self._pending)
        self._write_final_group(self._pending)
        self._pending = ""
        return ended_inside_group

    def _write_final_group(self, data: str) -> None:
        """Decode data that ends a base64 stream, where missing padding is tolerated."""
        remainder = len(data) % 4
        if remainder == 1:
            # One character carries only 6 bits, not a whole byte.
            self.invalid = True
            data = data[:-1]
        elif remainder:
            data += "=" * (4 - remainder)
        if data:
            self._out.write(binascii.a2b_base64(data))


def _write_base64(chunks: Iterable[str], out: ByteSink, outcome: DecodeOutcome) -> None:
    decoder = Base64Decoder(out)
    for chunk in chunks:
        decoder.feed(chunk)
    outcome.ended_inside_group = decoder.close()
    outcome.invalid_base64 = decoder.invalid


def _write_quoted_printable(chunks: Iterable[str], out: ByteSink) -> None:
    pending = ""
    for chunk in chunks:
        data = pending + chunk
        cut = data.rfind("\n") + 1
        if cut == 0:
            # A line longer than a chunk: cut anywhere except inside an "=XX" escape.
            cut = len(data)
            escape = data.rfind("=", max(len(data) - 2, 0))
            if escape >= 0:
                cut = escape
        out.write(binascii.a2b_qp(data[:cut].encode("ascii")))
        pending = data[cut:]
    if pending:
        out.write(binascii.a2b_qp(pending.encode("ascii")))


def _write_unencoded(chunks: Iterable[str], out: ByteSink) -> None:
    for chunk in chunks:
        out.write(chunk.encode("ascii"))


def transfer_encoding(part: Message) -> str:
    """Return the part's Content-Transfer-Encoding, lowercased, or "" if none."""
    value = raw_header(part, "content-transfer-encoding")
    return unfold(value).strip().lower() if value else ""


def payload_text(part: Message) -> str | None:
    """Return the undecoded payload of a non-multipart part, or None if unavailable.

    get_payload() re-decodes raw 8-bit bytes with the part's charset parameter, and a
    malformed charset name (one with a NUL, for example) makes it raise ValueError.
    """
    try:
        payload = part.get_payload()
    except (ValueError, UnicodeError):
        return None
    return payload if isinstance(payload, str) else None


def write_payload(part: Message, out: ByteSink, bodies: SpooledBodies) -> DecodeOutcome:
    """Decode the transfer encoding of a non-multipart part into ``out``.

    ``bodies`` expands the placeholders of a message parsed from a file. An unknown
    transfer encoding is written undecoded and named in the outcome.
    """
    outcome = DecodeOutcome()
    if part.is_multipart():
        return outcome
    payload = payload_text(part)

    encoding = transfer_encoding(part)
    if encoding not in _UNENCODED | {"base64", "quoted-printable"} | _UUENCODE:
        outcome.unknown_encoding = encoding
    if payload is not None and encoding == "base64":
        # Non-ASCII characters are invalid in base64 whatever their origin.
        _write_base64(bodies.text_chunks(payload), out, outcome)
    elif payload is None or encoding in _UUENCODE or not payload.isascii():
        # get_payload() re-decodes raw 8-bit bytes with the part's charset, so only
        # get_payload(decode=True) returns them exactly. It keeps the whole part in
        # memory, which is acceptable for the rare 8-bit and uuencoded attachments.
        bodies.expand_part(part)
        data = part.get_payload(decode=True)
        out.write(data if isinstance(data, bytes) else b"")
    elif encoding == "quoted-printable":
        _write_quoted_printable(bodies.text_chunks(payload), out)
    else:
        _write_unencoded(bodies.text_chunks(payload), out)
    return outcome
