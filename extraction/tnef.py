"""Unpacking of Outlook's TNEF container (winmail.dat, application/ms-tnef).

Parsing is done by the tnefparse library. This module picks names and data from its
result and checks what tnefparse only logs: truncated objects and bad checksums.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tnefparse import TNEF, TNEFAttachment
from tnefparse import properties as mapi

from .headers import bytes_to_text

TNEF_CONTENT_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})

_OBJECT_HEADER_BYTES = 9
_OBJECT_CHECKSUM_BYTES = 2
_FIRST_OBJECT_OFFSET = 6


class TnefError(Exception):
    """The TNEF data could not be unpacked completely."""


@dataclass
class TnefFile:
    """One attachment unpacked from TNEF; ``name`` and ``content_type`` may be missing."""

    name: str | None
    content_type: str | None
    data: bytes
    checksum_ok: bool


@dataclass
class _AttachmentObjects:
    """The level-2 TNEF objects of one attachment, as tnefparse saw them."""

    title: bytes | None = None
    data: bytes | None = None
    checksum_ok: bool = True


def is_tnef(content_type: str, name: str | None) -> bool:
    return content_type in TNEF_CONTENT_TYPES or (name or "").strip().lower() == "winmail.dat"


def _check_complete(data: bytes, tnef: TNEF) -> None:
    """Raise TnefError if an object is longer than the data, as in a truncated file.

    tnefparse silently shortens such an object, which would hand out a cut-off file.
    """
    offset = _FIRST_OBJECT_OFFSET
    for tnef_object in tnef.objects:
        declared = struct.unpack_from("<I", data, offset + 5)[0]
        if declared + _OBJECT_HEADER_BYTES + _OBJECT_CHECKSUM_BYTES > len(data) - offset:
            raise TnefError("the data ends inside a TNEF object, the file is truncated")
        offset += tnef_object.length


def _attachment_objects(tnef: TNEF) -> list[_AttachmentObjects]:
    """Group level-2 objects by attachment, the way tnefparse builds its attachments.

    tnefparse (1.4.0) starts a new attachment at each attAttachRendData object. The
    attAttachData bytes are taken from here because tnefparse replaces them with the
    MAPI copy of the data when one follows, and it strips trailing NUL bytes from that
    copy. A ZIP-based Office file usually ends in NUL bytes.
    """
    groups: list[_AttachmentObjects] = []
    for tnef_object in tnef.objects:
        if tnef_object.name == TNEF.ATTATTACHRENDDATA:
            groups.append(_AttachmentObjects())
        if tnef_object.level != TNEF.LVL_ATTACHMENT or not groups:
            continue
        if tnef_object.name == TNEF.ATTATTACHDATA:
            groups[-1].data = bytes(tnef_object.data)
            groups[-1].checksum_ok = tnef_object.good_checksum
        elif tnef_object.name == TNEF.ATTATTACHTITLE:
            groups[-1].title = bytes(tnef_object.data)
    return groups


def _mapi_text(attachment: TNEFAttachment, tag: int) -> str | None:
    for attribute in attachment.mapi_attrs:
        if attribute.name == tag:
            value = attribute.data
            if isinstance(value, bytes):
                value = bytes_to_text(value.rstrip(b"\x00"))
            return value.strip("\x00 ") or None
    return None


def _title_text(title: bytes | None, codepage: str | None) -> str | None:
    if not title:
        return None
    raw = title.split(b"\x00", 1)[0]
    try:
        return raw.decode(codepage or "cp1252") or None
    except (LookupError, UnicodeDecodeError):
        return bytes_to_text(raw) or None


def _unpack(tnef: TNEF, data: bytes | None, depth: int, max_depth: int) -> list[TnefFile]:
    """Collect the attachments of ``tnef``, checking completeness when ``data`` is given.

    An embedded item's data passes through tnefparse, which may have stripped its final
    NUL bytes, so its length cannot be checked.
    """
    if data is not None:
        _check_complete(data, tnef)
    groups = _attachment_objects(tnef)
    if len(groups) != len(tnef.attachments):
        raise TnefError("attachment objects out of order")

    files: list[TnefFile] = []
    for attachment, objects in zip(tnef.attachments, groups, strict=True):
        embedded = getattr(attachment, "embed", None)
        if embedded is not None:
            # An attached Outlook item is itself TNEF. Its attachments are unpacked and
            # its own text is dropped.
            if depth >= max_depth:
                raise TnefError(f"Outlook items nested deeper than {max_depth} levels")
            files.extend(_unpack(embedded, None, depth + 1, max_depth))
            continue

        name = _mapi_text(attachment, mapi.MAPI_ATTACH_LONG_FILENAME) or _title_text(
            objects.title, tnef.codepage
        )
        content = objects.data if objects.data is not None else bytes(attachment.data)
        if not content and not name:
            continue
        files.append(
            TnefFile(
                name=name,
                content_type=_mapi_text(attachment, mapi.MAPI_ATTACH_MIME_TAG),
                data=content,
                checksum_ok=objects.checksum_ok,
            )
        )
    return files


def unpack_tnef(data: bytes, max_depth: int = 5) -> tuple[list[TnefFile], bool]:
    """Return the attachments in TNEF ``data`` and whether it carries a message body.

    Raises TnefError when the data is not TNEF or is damaged beyond use.
    """
    try:
        tnef = TNEF(data, do_checksum=True)
        files = _unpack(tnef, data, 0, max_depth)
        has_body = bool(tnef.has_body())
    except TnefError:
        raise
    except Exception as error:
        # tnefparse raises whatever its struct reads and decoders raise on bad input
        # (ValueError, struct.error, UnicodeDecodeError, NameError and others).
        raise TnefError(f"{type(error).__name__}: {error}") from error
    return files, has_body
