"""Decoding of raw header values: RFC 2047 encoded-words, raw 8-bit text, message info.

The message is parsed with the compat32 policy, so header values stay exactly as they
arrived. 8-bit bytes appear in them as surrogate escapes. This module turns them into
text itself because the stdlib decoders either drop 8-bit bytes or hide an unknown
charset, and both must be reported.
"""

from __future__ import annotations

import binascii
import email.utils
import re
from datetime import UTC, datetime
from email.feedparser import BytesFeedParser
from email.message import Message
from email.policy import compat32
from typing import BinaryIO

from .models import MessageInfo

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# parse_message_info reads at most this much of a message file. Header lines after
# it are so unusual that their loss costs less than reading a huge file into memory.
MAX_HEADER_BLOCK_BYTES = 1024 * 1024
_HEADER_READ_BYTES = 64 * 1024
# Characters RFC 2978 allows in charset names. Anything else cannot name a codec, and
# some values (an embedded NUL) make the codec lookup raise ValueError.
_CHARSET_NAME = re.compile(r"[A-Za-z0-9!#$%&'+\-^_`{}~.:]+")


def raw_header(message: Message, name: str) -> str | None:
    """Return the first value of header ``name`` as it arrived, or None.

    Message.get() would wrap a value with 8-bit bytes in a Header object and lose the
    bytes, so this reads the stored values directly.
    """
    target = name.lower()
    for key, value in message.raw_items():
        if key.lower() == target:
            return value if isinstance(value, str) else str(value)
    return None


def as_latin1_text(value: str) -> str:
    """Map a surrogate-escaped header value to one character per original byte.

    Characters U+0000 to U+00FF then stand for the bytes 0x00 to 0xFF, so later steps
    can recover the original bytes with ``encode("latin-1")``.
    """
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


def unfold(value: str) -> str:
    """Remove the line breaks of a folded header and keep the whitespace after them."""
    return value.replace("\r", "").replace("\n", "")


def bytes_to_text(data: bytes) -> str:
    """Decode bytes of unknown charset: UTF-8 when valid, else Windows-1252, else Latin-1.

    Windows-1252 leaves five byte values undefined, and Latin-1 maps every byte.
    """
    for charset in ("utf-8", "cp1252"):
        try:
            return data.decode(charset)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def decode_with_charset(data: bytes, charset: str | None, notes: list[str]) -> str:
    """Decode ``data`` in a declared charset, appending to ``notes`` when that fails.

    An unknown charset falls back to Latin-1. Bytes that are invalid in a known charset
    become U+FFFD. A charset of None means none was declared.
    """
    if not charset:
        return bytes_to_text(data)
    codec_name = charset.split("*", 1)[0].strip()
    try:
        if not _CHARSET_NAME.fullmatch(codec_name):
            raise LookupError(codec_name)
        return data.decode(codec_name)
    except LookupError:
        notes.append(f"unknown charset {charset!r}, decoded as Latin-1")
        return data.decode("latin-1")
    except UnicodeError:
        notes.append(f"text is not valid {charset}, unreadable bytes replaced")
    try:
        return data.decode(codec_name, errors="replace")
    except UnicodeError:
        # A few codecs, such as idna, raise even with errors="replace".
        return data.decode("latin-1")


def decode_encoded_words(text: str, notes: list[str]) -> str:
    """Decode RFC 2047 encoded-words in ``text``, which contains one character per byte.

    Whitespace between two encoded-words is dropped as RFC 2047 requires. Adjacent
    words in the same charset are joined as bytes before decoding, because Outlook
    splits long names between the bytes of one UTF-8 character.
    """
    pieces: list[tuple[bytes, str | None]] = []
    position = 0
    after_word = False
    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        if between and not (after_word and between.isspace()):
            pieces.append((between.encode("latin-1"), None))
        charset, encoding, payload = match.groups()
        data = _decode_word_payload(encoding, payload, notes)
        if data is None:
            pieces.append((match.group(0).encode("latin-1"), None))
        else:
            pieces.append((data, charset.lower()))
        position = match.end()
        after_word = True
    if position < len(text):
        pieces.append((text[position:].encode("latin-1"), None))

    merged: list[tuple[bytes, str | None]] = []
    for data, charset in pieces:
        if merged and charset is not None and merged[-1][1] == charset:
            merged[-1] = (merged[-1][0] + data, charset)
        else:
            merged.append((data, charset))
    return "".join(decode_with_charset(data, charset, notes) for data, charset in merged)


def _decode_word_payload(encoding: str, payload: str, notes: list[str]) -> bytes | None:
    if encoding in "qQ":
        return binascii.a2b_qp(payload.encode("latin-1"), header=True)
    padded = payload + "=" * (-len(payload) % 4)
    try:
        return binascii.a2b_base64(padded.encode("latin-1"))
    except binascii.Error:
        notes.append("invalid base64 in an encoded-word, kept the raw text")
        return None


def decode_header_text(value: str | None, notes: list[str]) -> str | None:
    """Decode a raw header value to text, or return None when there is none."""
    if value is None:
        return None
    return decode_encoded_words(as_latin1_text(unfold(value)), notes).strip()


def read_message_info(message: Message, notes: list[str]) -> MessageInfo:
    """Build MessageInfo from a parsed message, appending decoding damage to ``notes``."""
    subject_notes: list[str] = []
    sender_notes: list[str] = []
    subject = decode_header_text(raw_header(message, "subject"), subject_notes)
    sender_value = raw_header(message, "from") or raw_header(message, "sender")
    sender = decode_header_text(sender_value, sender_notes)
    notes.extend(f"Subject: {note}" for note in subject_notes)
    notes.extend(f"From: {note}" for note in sender_notes)

    message_id = raw_header(message, "message-id")
    if message_id is not None:
        message_id = bytes_to_text(as_latin1_text(unfold(message_id)).encode("latin-1"))
        message_id = message_id.strip() or None

    return MessageInfo(
        message_id=message_id,
        sender=sender or None,
        subject=subject,
        date=_parse_date(raw_header(message, "date")),
    )


def _parse_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(unfold(value).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # RFC 5322 defines -0000 as UTC with the local zone unknown. A date with no
        # zone at all is taken as UTC too, which may be off by the sender's offset.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _read_header_block(source: BinaryIO) -> bytes:
    """Read a message file from its current position to the end of its header block."""
    data = b""
    while len(data) < MAX_HEADER_BLOCK_BYTES:
        chunk = source.read(_HEADER_READ_BYTES)
        if not chunk:
            break
        # The end may straddle two reads, and it is at most four bytes long.
        search_from = max(len(data) - 3, 0)
        data += chunk
        if _HEADER_END.search(data, search_from):
            break
    return data


def parse_message_info(raw: bytes | BinaryIO) -> MessageInfo:
    """Parse only the header block of a raw message into MessageInfo.

    ``raw`` may be a binary file positioned at the message's start, of which at most
    MAX_HEADER_BLOCK_BYTES are read. Decoding damage (such as an unknown charset in the
    subject) is not reported here. extract_files reports it in its problems.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raw = _read_header_block(raw)
    end = _HEADER_END.search(raw)
    header_block = raw if end is None else raw[: end.end()]
    parser = BytesFeedParser(policy=compat32)
    parser.feed(header_block)
    return read_message_info(parser.close(), [])


def main_value(value: str | None) -> str:
    """Return the lowercased value before the first parameter, or "" for no header."""
    if value is None:
        return ""
    return unfold(value).split(";", 1)[0].strip().lower()
