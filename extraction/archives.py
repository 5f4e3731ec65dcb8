"""Unpacking of attached ZIP archives within member, size and nesting limits.

Member names are data only: each member is written to a new uuid-named file in the
work directory, so a member called "../../etc/passwd" or "/root/x" cannot write
outside it. Its display name is reduced to the sanitized base name later.
"""

from __future__ import annotations

import binascii
import errno
import lzma
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .models import ExtractionOptions
from .names import split_extension
from .output import Blob, FileSink

ZIP_CONTENT_TYPES = frozenset(
    {"application/zip", "application/x-zip-compressed", "application/x-zip", "multipart/x-zip"}
)

_COPY_CHUNK_BYTES = 64 * 1024
_ENCRYPTED_FLAG = 0x1
_UTF8_NAME_FLAG = 0x800
_UNICODE_PATH_EXTRA_ID = 0x7075
_UNIX_SYSTEM = 3

# Exceptions that zipfile and its decompressors raise on damaged or hostile archives.
# OSError is handled apart in _rejected_when_unreadable.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    ValueError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
)


class ArchiveRejected(Exception):
    """The archive breaks a limit, is encrypted or is damaged, so it stays whole."""


@contextmanager
def _rejected_when_unreadable(message: str) -> Iterator[None]:
    """Turn errors from reading archive data into ArchiveRejected with ``message``.

    Only two OSError forms come from the archive's content: bz2 raises one without errno
    on invalid data, and a seek to an offset the archive gives as negative raises EINVAL.
    Other OSErrors are I/O failures in the work directory and propagate.
    """
    try:
        yield
    except _READ_ERRORS as error:
        raise ArchiveRejected(f"{message} ({error})") from error
    except OSError as error:
        if error.errno not in (None, errno.EINVAL):
            raise
        raise ArchiveRejected(f"{message} ({error})") from error


def is_zip(content_type: str, name: str | None) -> bool:
    """Return True for a .zip name, or a ZIP content type on a name without extension.

    Office files (docx, xlsx and others) are ZIP archives too and must stay whole, so
    the extension decides first.
    """
    _stem, extension = split_extension(name or "")
    if extension:
        return extension.lower() == ".zip"
    return content_type in ZIP_CONTENT_TYPES


def _unicode_path_extra(info: zipfile.ZipInfo, raw_name: bytes) -> str | None:
    """Return the UTF-8 name from an Info-ZIP Unicode Path extra field, if valid.

    7-Zip and WinRAR write this field next to a legacy-encoded name. Its CRC-32 must
    match the legacy name, or the field is stale.
    """
    extra = info.extra
    offset = 0
    while offset + 4 <= len(extra):
        field_id, size = struct.unpack_from("<HH", extra, offset)
        body = extra[offset + 4 : offset + 4 + size]
        offset += 4 + size
        if field_id != _UNICODE_PATH_EXTRA_ID or len(body) < 5 or body[0] != 1:
            continue
        (name_crc,) = struct.unpack_from("<I", body, 1)
        if name_crc != binascii.crc32(raw_name):
            return None
        try:
            return body[5:].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def member_name(info: zipfile.ZipInfo) -> str:
    """Decode a member's path, which many tools store as UTF-8 without the UTF-8 flag.

    Without the flag zipfile decodes the name as CP437, the ZIP default.
    """
    if info.flag_bits & _UTF8_NAME_FLAG:
        return info.filename
    try:
        raw_name = info.orig_filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    unicode_path = _unicode_path_extra(info, raw_name)
    if unicode_path:
        return unicode_path
    try:
        return raw_name.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == _UNIX_SYSTEM and stat.S_ISLNK(info.external_attr >> 16)


class ZipUnpacker:
    """Unpacks one attached archive, nested archives included, all or nothing.

    Members go into uuid-named blobs. The caller adds them to the result only when the
    whole tree unpacked within the limits, and discards them otherwise.
    """

    def __init__(self, sink: FileSink, options: ExtractionOptions) -> None:
        self._sink = sink
        self._options = options
        self.member_count = 0
        self.total_bytes = 0
        self.extracted: list[tuple[str, Blob]] = []
        self.notes: list[str] = []
        self._nested_archives: list[Blob] = []

    def unpack(self, path: Path, depth: int = 1) -> None:
        """Unpack the archive at ``path``, raising ArchiveRejected on any limit breach."""
        with path.open("rb") as archive_file:
            with _rejected_when_unreadable("not a readable ZIP archive"):
                archive = zipfile.ZipFile(archive_file)
                infos = archive.infolist()
            with archive:
                self._unpack_members(archive, [info for info in infos if not info.is_dir()], depth)

    def _unpack_members(
        self, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], depth: int
    ) -> None:
        options = self._options
        self.member_count += len(infos)
        if self.member_count > options.zip_max_members:
            raise ArchiveRejected(f"more than {options.zip_max_members} members")
        declared = sum(info.file_size for info in infos)
        if self.total_bytes + declared > options.zip_max_total_bytes:
            raise ArchiveRejected(
                f"more than {options.zip_max_total_bytes} bytes when uncompressed"
            )
        for info in infos:
            if info.flag_bits & _ENCRYPTED_FLAG:
                raise ArchiveRejected(f"member {member_name(info)!r} is encrypted")

        for info in infos:
            name = member_name(info)
            if _is_symlink(info):
                self.notes.append(f"member {name!r} is a symbolic link, skipped")
                continue
            nested = split_extension(name)[1].lower() == ".zip"
            if nested and depth >= options.zip_max_depth:
                raise ArchiveRejected(f"archives nested deeper than {options.zip_max_depth} levels")
            blob = self._sink.new_blob()
            if nested:
                self._nested_archives.append(blob)
            else:
                self.extracted.append((name, blob))
            self._copy_member(archive, info, name, blob)
            blob.close()
            if nested:
                self.unpack(blob.path, depth + 1)

    def _copy_member(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, blob: Blob
    ) -> None:
        limit = self._options.zip_max_total_bytes
        with _rejected_when_unreadable(f"member {name!r} is damaged"):
            source = archive.open(info)
        with source:
            while True:
                with _rejected_when_unreadable(f"member {name!r} is damaged"):
                    chunk = source.read(_COPY_CHUNK_BYTES)
                if not chunk:
                    return
                self.total_bytes += len(chunk)
                if self.total_bytes > limit:
                    raise ArchiveRejected(f"more than {limit} bytes when uncompressed")
                blob.write(chunk)

    def discard_nested_archives(self) -> None:
        """Delete the temporary copies of nested archives, whose members were kept."""
        for blob in self._nested_archives:
            blob.discard()
        self._nested_archives.clear()

    def discard_all(self) -> None:
        """Delete everything written so far, after the archive was rejected."""
        for _name, blob in self.extracted:
            blob.discard()
        self.extracted.clear()
        self.discard_nested_archives()
