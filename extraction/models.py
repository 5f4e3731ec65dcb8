"""Data types that extract_files takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class MessageInfo:
    """Header fields of one message, decoded from RFC 2047 encoded-words.

    ``date`` is timezone-aware. A date without a zone, or with the zone ``-0000``,
    is taken as UTC. ``date`` is None when the header is missing or unparseable.
    """

    message_id: str | None
    sender: str | None
    subject: str | None
    date: datetime | None


@dataclass
class ExtractedFile:
    """One file of an extraction result.

    ``name`` is the sanitized display name, unique within one result, and ``path``
    is the decoded content under a generated name inside the work directory.
    ``origin`` is where the file came from: "attachment", "inline", "nested-message"
    (the .eml of an attached message), "tnef" (unpacked from winmail.dat) or "zip".
    Files found inside an attached message get the origin they would have at the top
    level.
    """

    name: str
    content_type: str
    size: int
    path: Path
    sha256: str
    origin: str


@dataclass
class ExtractionResult:
    """Message headers, extracted files in message order, and damage found on the way."""

    info: MessageInfo
    files: list[ExtractedFile]
    problems: list[str]


@dataclass(frozen=True)
class ExtractionOptions:
    """Settings for extract_files.

    The ZIP limits apply to one attached archive together with the archives nested in
    it. ``zip_max_members`` counts file members at all levels, a nested archive included.
    ``zip_max_total_bytes`` counts every decompressed byte, so the bytes of a nested
    archive count once as a member and again as its own members. ``zip_max_depth`` 2
    unpacks a ZIP inside the attached ZIP but no deeper.
    """

    include_inline_images: bool = False
    unpack_zip: bool = False
    zip_max_members: int = 500
    zip_max_total_bytes: int = 500 * 1024 * 1024
    zip_max_depth: int = 2
    keep_nested_message: bool = True
