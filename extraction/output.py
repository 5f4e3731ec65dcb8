"""Writing extracted content into the work directory and collecting the result."""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path
from types import TracebackType

from .models import ExtractedFile
from .names import UniqueNames, safe_filename, sanitize_name

logger = logging.getLogger(__name__)


class Blob:
    """A new file in the work directory under a uuid4 name, hashed while it is written.

    The attachment's own name is never part of the path, so a hostile name cannot
    choose where data lands.
    """

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / uuid.uuid4().hex
        self._file = self.path.open("xb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        """Close and delete the file, for content that does not end up in the result."""
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Blob:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


class FileSink:
    """The growing result of one extraction: files, their unique names and problems."""

    def __init__(self, workdir: Path, message_id: str | None = None) -> None:
        self.workdir = workdir
        self.message_id = message_id
        self.files: list[ExtractedFile] = []
        self.problems: list[str] = []
        self._names = UniqueNames()
        self._unnamed_count = 0

    def new_blob(self) -> Blob:
        return Blob(self.workdir)

    def add(self, blob: Blob, name: str | None, content_type: str, origin: str) -> ExtractedFile:
        """Add a closed blob to the result under a sanitized, unique version of ``name``.

        A missing or unusable name becomes "attachment-N" with an extension guessed from
        ``content_type``, where N counts the unnamed files of this result.
        """
        display = sanitize_name(name or "")
        if not display:
            self._unnamed_count += 1
            display = safe_filename(
                None,
                fallback_stem=f"attachment-{self._unnamed_count}",
                content_type=content_type,
            )
        extracted = ExtractedFile(
            name=self._names.claim(display),
            content_type=content_type,
            size=blob.size,
            path=blob.path,
            sha256=blob.sha256,
            origin=origin,
        )
        self.files.append(extracted)
        return extracted

    def report(self, problem: str) -> None:
        """Record damage that extraction worked around, and log it."""
        self.problems.append(problem)
        logger.warning("Message %s: %s", self.message_id or "without Message-ID", problem)
