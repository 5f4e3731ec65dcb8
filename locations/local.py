"""The "folder" kind: a directory under the app's locations root (FILES_ROOT/locations).

The configured path is resolved once and must stay inside the root. Below it, every
step opens the next directory relative to the previous one with O_NOFOLLOW. So a
symbolic link placed in the folder cannot lead a read or delete outside, even when it
appears between a listing and the next call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .base import TEMPORARY_PREFIX, Entry, EntryKind, LocationError, LocationSettings, TreeLocation

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_LINK_UNSUPPORTED = (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)


def resolve_folder(folder_root: Path, path: str) -> Path:
    """Return the directory for the path setting, raising LocationError if it leaves the root.

    The directory need not exist yet; `check` reports a missing one.
    """
    if not path.strip():
        raise LocationError(
            f"The path setting is empty. Enter the name of a folder inside the "
            f"locations folder {str(folder_root)!r}."
        )
    if any(ord(character) < 32 for character in path):
        raise LocationError(f"Path {path!r} contains control characters. Check the path setting.")
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise LocationError(
            f"Path {path!r} must be relative to the locations folder {str(folder_root)!r} "
            "and must not contain '..'. Check the path setting."
        )
    root = folder_root.resolve()
    base = (root / relative).resolve()
    if base == root or not base.is_relative_to(root):
        raise LocationError(
            f"Path {path!r} leads outside the locations folder {str(folder_root)!r}, "
            "through a symbolic link or to the folder itself. Check the path setting, or "
            "mount the shared folder inside the locations folder instead of linking to it."
        )
    return base


class FolderLocation(TreeLocation):
    """A folder on this machine. Remote paths are relative to it, "" being the folder itself."""

    def __init__(self, settings: LocationSettings, folder_root: Path) -> None:
        super().__init__(settings, "")
        self.base = resolve_folder(folder_root, settings.path)
        self.folder_root = folder_root

    def where(self) -> str:
        return f"in the locations folder {str(self.folder_root)!r}"

    def display_path(self, path: str) -> str:
        return posixpath.join(self.settings.path.rstrip("/"), path) if path else self.settings.path

    def connect(self) -> None:
        """Do nothing, because a local folder needs no connection."""

    def close(self) -> None:
        """Do nothing, because every call opens and closes its own descriptors."""

    @contextlib.contextmanager
    def native_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OSError(
                    error.errno, "a symbolic link or a file is in place of a folder"
                ) from error
            raise

    # Primitives

    def list_entries(self, directory: str) -> list[Entry]:
        descriptor = self._open_dir(directory)
        try:
            entries = []
            with os.scandir(descriptor) as iterator:
                for item in iterator:
                    info = item.stat(follow_symlinks=False)
                    kind = _kind(info.st_mode)
                    entries.append(Entry(item.name, kind, info.st_size, info.st_mtime))
            return entries
        finally:
            os.close(descriptor)

    def stat_entry(self, path: str) -> Entry | None:
        try:
            if not path:
                info = os.stat(self.base)
                return Entry("", _kind(info.st_mode), info.st_size, info.st_mtime)
            parent, name = posixpath.split(path)
            descriptor = self._open_dir(parent)
            try:
                info = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
            finally:
                os.close(descriptor)
        except FileNotFoundError:
            return None
        return Entry(name, _kind(info.st_mode), info.st_size, info.st_mtime)

    def read_file(self, path: str, target: BinaryIO) -> None:
        parent, name = posixpath.split(path)
        directory = self._open_dir(parent)
        try:
            # O_NONBLOCK keeps a FIFO put in place of the file from blocking the open.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            descriptor = os.open(name, flags, dir_fd=directory)
        finally:
            os.close(directory)
        with os.fdopen(descriptor, "rb") as source:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            os.set_blocking(descriptor, True)
            shutil.copyfileobj(source, target)

    def store_new(self, source: BinaryIO, directory: str, name: str) -> bool:
        """Write a hidden temporary file, then hard-link it to `name`.

        link() fails when `name` exists, so no file is replaced and readers never see
        a partly written file under the final name.
        """
        folder = self._open_dir(directory)
        temporary = f"{TEMPORARY_PREFIX}upload-{secrets.token_hex(8)}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            descriptor = os.open(temporary, flags, 0o644, dir_fd=folder)
            with os.fdopen(descriptor, "wb") as handle:
                shutil.copyfileobj(source, handle)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
            except FileExistsError:
                return False
            except OSError as error:
                if error.errno not in _LINK_UNSUPPORTED:
                    raise
                # NOTE: file systems without hard links (some network shares) get a
                # check and a rename, which can replace a file created in between.
                with contextlib.suppress(FileNotFoundError):
                    os.stat(name, dir_fd=folder, follow_symlinks=False)
                    return False
                os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
            os.fsync(folder)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=folder)
            os.close(folder)

    def make_dir(self, path: str) -> None:
        parent, name = posixpath.split(path)
        descriptor = self._open_dir(parent)
        try:
            os.mkdir(name, 0o755, dir_fd=descriptor)
        except FileExistsError:
            info = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                raise
        finally:
            os.close(descriptor)

    def delete_file(self, path: str) -> None:
        parent, name = posixpath.split(path)
        descriptor = self._open_dir(parent)
        try:
            os.unlink(name, dir_fd=descriptor)
        finally:
            os.close(descriptor)

    def delete_dir(self, path: str) -> None:
        parent, name = posixpath.split(path)
        descriptor = self._open_dir(parent)
        try:
            os.rmdir(name, dir_fd=descriptor)
        finally:
            os.close(descriptor)

    def _open_dir(self, path: str) -> int:
        """Open the folder at `path` below the base, refusing symbolic links at every step."""
        descriptor = os.open(self.base, _DIRECTORY_FLAGS)
        for part in PurePosixPath(path).parts if path else ():
            try:
                child = os.open(part, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=descriptor)
            finally:
                os.close(descriptor)
            descriptor = child
        return descriptor


def _kind(mode: int) -> EntryKind:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"
