"""The file store: job files under ``FILES_ROOT`` with generated names.

Original file names are data in the database and never become paths here;
a storage name is a uuid4 hex checked before use.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

_STORAGE_NAME = re.compile(r"^[0-9a-f]{32}$")


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def work_root(self) -> Path:
        """Scratch space on the same filesystem, so adding a file is a rename."""
        return self.root / "work"

    def ensure(self) -> None:
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self.work_root.mkdir(parents=True, exist_ok=True)

    def path(self, storage_name: str) -> Path:
        if not _STORAGE_NAME.match(storage_name):
            raise ValueError(f"invalid storage name {storage_name!r}")
        return self.root / "jobs" / storage_name[:2] / storage_name

    def add(self, source: Path, *, sync_directory: bool = True) -> str:
        """Move ``source`` into the store and return its storage name.

        The file's data is fsynced. With ``sync_directory`` False the caller
        must call :meth:`sync_directories` before relying on the new name,
        which lets a batch of files share one directory fsync.
        """
        storage_name = uuid.uuid4().hex
        target = self.path(storage_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.replace(source, target)
        except OSError:
            # Another filesystem (a separate mount for FILES_ROOT/work): copy.
            shutil.copyfile(source, target)
            source.unlink()
        if sync_directory:
            _fsync_dir(target.parent)
        return storage_name

    def sync_directories(self, storage_names: list[str]) -> None:
        """Make the names of newly added files durable, one fsync per directory."""
        for directory in {self.path(name).parent for name in storage_names}:
            _fsync_dir(directory)

    def remove(self, storage_name: str) -> None:
        self.path(storage_name).unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
