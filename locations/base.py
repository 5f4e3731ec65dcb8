"""Settings, units and the walking logic that every kind of location shares.

A backend (folder, FTP, SFTP) supplies a few primitives on remote paths: list a
folder, stat a path, read a file, store a new file without replacing another,
create a folder and delete. `TreeLocation` builds the public operations from them,
so the rules on names, hidden files, nesting depth and stability live in one place.

Remote names are never trusted as local paths: every name that reaches the local
disk goes through `extraction.names.safe_filename`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import posixpath
import secrets
import shutil
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, Protocol, Self

from extraction.names import UniqueNames, safe_filename, sanitize_name

logger = logging.getLogger(__name__)

KINDS = ("folder", "ftp", "sftp")
DEFAULT_PORTS = {"ftp": 21, "sftp": 22}

MAX_DEPTH = 32
"""Folder nesting that listing, download and removal follow before they give up."""
MAX_NAME_ATTEMPTS = 1000
"""Numbered names (" (2)", " (3)" and so on) that upload tries before it gives up."""

TEMPORARY_PREFIX = ".mailroom-"
"""Start of the names of upload and check files, which listings skip like other dot files."""

EntryKind = Literal["file", "dir", "other"]


@dataclass(frozen=True)
class LocationSettings:
    """Address, path and credentials of a location, with secrets already decrypted."""

    kind: str
    """"folder" (a directory under the locations root), "ftp" or "sftp"."""
    path: str
    """Folder relative to the locations root for "folder", or the remote path for FTP and
    SFTP. A relative remote path starts at the login folder, and "" is that folder itself."""
    host: str | None = None
    port: int | None = None
    """None means the protocol's standard port (21 for FTP, 22 for SFTP)."""
    username: str | None = None
    """None logs in to FTP as "anonymous"; SFTP requires a user name."""
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    """Unencrypted private key in OpenSSH or PEM format, for SFTP only. Like the password,
    it is left out of repr() so that logs and tracebacks do not show it."""
    known_host_key: str | None = None
    """The SFTP server's public key line, such as "ssh-ed25519 AAAA...". SFTP connections
    without it are rejected, because accepting an unknown key would trust any server."""
    ftp_tls: bool = False
    """Use explicit FTPS (AUTH TLS) and protect the data connections too."""
    timeout: float = 30.0
    """Seconds that every connect, read and write may take. Host name lookups follow the
    system resolver's own timeout instead."""


class LocationError(Exception):
    """A location cannot be used. The message names the setting to fix."""


@dataclass(frozen=True)
class Unit:
    """A top-level file or folder of a location: the thing that becomes one job's input."""

    name: str
    """Remote name exactly as listed, for calls back to the location; never a local path."""
    is_dir: bool
    size: int
    """Bytes; for a folder, the total of the files in it at any depth."""
    mtime: float
    """Modification time in POSIX seconds; for a folder, the newest of its entries."""
    listed_at: float = field(default=0.0, compare=False)
    """`time.monotonic()` when the listing was taken, so `is_stable` can count it as
    its first observation. 0.0 means "long ago"."""


class Location(Protocol):
    """A place to take input files from and to store copies in."""

    def list_units(self) -> list[Unit]: ...

    def is_stable(self, unit: Unit, *, quiet_seconds: float) -> bool: ...

    def download(self, unit: Unit, target_dir: Path) -> list[Path]: ...

    def remove(self, unit: Unit) -> None: ...

    def upload(self, local_file: Path, name: str, subfolder: str | None = None) -> str: ...

    def check(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One directory entry as a backend reports it."""

    name: str
    kind: EntryKind
    size: int
    mtime: float


class TreeLocation(ABC):
    """The public operations of a location, built on a backend's primitives.

    Paths passed to the primitives are POSIX strings that the backend understands:
    `self.root` joined with names from its own listings.
    """

    def __init__(self, settings: LocationSettings, root: str) -> None:
        self.settings = settings
        self.root = root

    # Primitives

    @abstractmethod
    def where(self) -> str:
        """Describe the location for messages, e.g. "on 127.0.0.1:21"."""

    @abstractmethod
    def display_path(self, path: str) -> str:
        """Return `path` in the terms of the path setting, for messages and upload results."""

    @abstractmethod
    def connect(self) -> None:
        """Open the connection if it is not open, raising LocationError on failure."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def native_errors(self) -> contextlib.AbstractContextManager[None]:
        """Turn the backend's errors into FileNotFoundError, PermissionError, TimeoutError
        or OSError with a readable message."""

    @abstractmethod
    def list_entries(self, directory: str) -> list[Entry]: ...

    @abstractmethod
    def stat_entry(self, path: str) -> Entry | None:
        """Return the entry at `path` without following a symbolic link, or None if missing."""

    @abstractmethod
    def read_file(self, path: str, target: BinaryIO) -> None: ...

    @abstractmethod
    def store_new(self, source: BinaryIO, directory: str, name: str) -> bool:
        """Store `source` as `name` in `directory`; return False if `name` is taken."""

    @abstractmethod
    def make_dir(self, path: str) -> None:
        """Create a folder; an existing folder is fine."""

    @abstractmethod
    def delete_file(self, path: str) -> None:
        """Delete a file, or a symbolic link without touching its target."""

    @abstractmethod
    def delete_dir(self, path: str) -> None:
        """Delete an empty folder."""

    # Context manager

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Public operations

    def check(self) -> None:
        """Connect, log in, and prove that the path is a folder we may list and write to.

        The write test stores and deletes a small dot file, because permission bits
        alone do not tell what a server allows.
        """
        self.connect()
        root = self.display_path(self.root)
        with self.operation("open", self.root):
            entry = self.stat_entry(self.root)
        if entry is None:
            raise LocationError(
                f"Path {root!r} was not found {self.where()}. Check the path setting."
            )
        if entry.kind != "dir":
            raise LocationError(
                f"Path {root!r} {self.where()} is not a folder. Check the path setting."
            )
        with self.operation("list", self.root):
            self.list_entries(self.root)

        probe = f"{TEMPORARY_PREFIX}check-{secrets.token_hex(8)}"
        with self.operation("write to", self.root):
            self.store_new(io.BytesIO(b"Mailroom write test\n"), self.root, probe)
        with self.operation("delete files in", self.root):
            self.delete_file(posixpath.join(self.root, probe))

    def list_units(self) -> list[Unit]:
        """Return the visible top-level files and folders, sorted by name.

        Dot files, symbolic links and special files are left out. Dot files are skipped
        because tools such as rsync and Office write their partial or lock files with a
        leading dot, and macOS adds its metadata files that way.
        """
        self.connect()
        listed_at = time.monotonic()
        units = []
        for entry in self.visible_entries(self.root):
            path = posixpath.join(self.root, entry.name)
            if entry.kind == "dir":
                size, mtime = self.summarize_folder(path, entry.mtime, depth=1)
                units.append(Unit(entry.name, True, size, mtime, listed_at))
            else:
                units.append(Unit(entry.name, False, entry.size, entry.mtime, listed_at))
        return sorted(units, key=lambda unit: unit.name)

    def is_stable(self, unit: Unit, *, quiet_seconds: float) -> bool:
        """Tell whether `unit` kept its size and mtime for `quiet_seconds`.

        The listing that produced `unit` is the first observation. If it is younger than
        `quiet_seconds`, this sleeps for the rest of the quiet period before taking the
        second one. Comparing two observations instead of the mtime with our clock keeps
        servers with a wrong clock from making a file look finished.
        """
        waited = time.monotonic() - unit.listed_at
        if waited < quiet_seconds:
            time.sleep(quiet_seconds - waited)
        current = self.current_unit(unit.name)
        if current is None or current.is_dir != unit.is_dir:
            return False
        return (current.size, current.mtime) == (unit.size, unit.mtime)

    def download(self, unit: Unit, target_dir: Path) -> list[Path]:
        """Copy a file, or a folder with everything visible in it, into `target_dir`.

        Returns the local paths of the copied files. Local names are sanitized remote
        names, made unique with " (2)" and so on. If the copy fails, the files and
        folders created so far are deleted before the error is raised.
        """
        self.connect()
        path = self.unit_path(unit)
        with self.operation("open", path):
            entry = self.stat_entry(path)
        if entry is None or (entry.kind == "dir") != unit.is_dir:
            raise LocationError(
                f"{self.display_path(path)!r} is no longer {self.where()}, "
                "so it was not downloaded."
            )

        created: list[Path] = []
        try:
            if unit.is_dir:
                folder = _create_local_dir(target_dir, _folder_name(unit.name))
                created.append(folder)
                self.download_tree(path, folder, created, depth=1)
            else:
                self.download_file(path, target_dir, unit.name, created)
        except BaseException:
            _delete_created(created)
            raise
        return [item for item in created if not item.is_dir()]

    def remove(self, unit: Unit) -> None:
        """Delete a file or a whole folder, unless it changed since it was listed.

        A unit that is already gone counts as removed, so a retried job may call this
        twice. A unit whose size or mtime changed contains data that the job never read, so
        it stays and LocationError is raised.
        """
        self.connect()
        current = self.current_unit(unit.name)
        if current is None:
            return
        path = self.unit_path(unit)
        if current != unit:
            raise LocationError(
                f"{self.display_path(path)!r} {self.where()} changed after it was listed, "
                "so it was left in place. The next listing shows it again."
            )
        if unit.is_dir:
            self.remove_tree(path, depth=1)
        else:
            with self.operation("delete", path):
                self.delete_file(path)

    def upload(self, local_file: Path, name: str, subfolder: str | None = None) -> str:
        """Store a copy of `local_file` and return its path in the terms of the path setting.

        `name` and each "/"-separated part of `subfolder` are sanitized, and missing
        folders are created. An existing file is never replaced: the copy gets the first
        free name of "name (2).ext", "name (3).ext" and so on.
        """
        self.connect()
        directory = self.root
        for part in _subfolder_parts(subfolder):
            directory = posixpath.join(directory, part)
            with self.operation("create folder", directory):
                self.make_dir(directory)

        requested_name = safe_filename(name)
        names = UniqueNames()
        for _attempt in range(MAX_NAME_ATTEMPTS):
            candidate = names.claim(requested_name)
            with local_file.open("rb") as source, self.operation("write to", directory):
                stored = self.store_new(source, directory, candidate)
            if stored:
                return self.display_path(posixpath.join(directory, candidate))
        raise LocationError(
            f"No free name for {name!r} in {self.display_path(directory)!r} {self.where()} "
            f"after {MAX_NAME_ATTEMPTS} attempts. Move old files out of that folder."
        )

    # Shared helpers

    @contextlib.contextmanager
    def operation(self, action: str, path: str) -> Iterator[None]:
        """Raise LocationError that names `action` on `path` for any backend error."""
        displayed_path = self.display_path(path)
        try:
            with self.native_errors():
                yield
        except FileNotFoundError as error:
            raise LocationError(
                f"Could not {action} {displayed_path!r} {self.where()}: not found. "
                "Check the path setting."
            ) from error
        except PermissionError as error:
            raise LocationError(
                f"Could not {action} {displayed_path!r} {self.where()}: permission denied. "
                "Check the path setting and the folder's permissions for this user."
            ) from error
        except TimeoutError as error:
            raise LocationError(
                f"Could not {action} {displayed_path!r} {self.where()}: timed out after "
                f"{self.settings.timeout:g} s. Check that the server works, or raise the timeout."
            ) from error
        except OSError as error:
            raise LocationError(
                f"Could not {action} {displayed_path!r} {self.where()}: {_describe(error)}"
            ) from error

    def unit_path(self, unit: Unit) -> str:
        if not _is_usable_name(unit.name):
            raise LocationError(
                f"Invalid unit name {unit.name!r}: expected a name from list_units."
            )
        return posixpath.join(self.root, unit.name)

    def visible_entries(self, directory: str) -> list[Entry]:
        """List the dot-free files and folders whose names are safe to send back."""
        with self.operation("list", directory):
            entries = self.list_entries(directory)
        visible = []
        for entry in entries:
            if not _is_usable_name(entry.name) or entry.name.startswith("."):
                continue
            if entry.kind == "other":
                logger.info(
                    "Skipping %r in %r %s: not a regular file or folder",
                    entry.name,
                    self.display_path(directory),
                    self.where(),
                )
                continue
            visible.append(entry)
        return visible

    def current_unit(self, name: str) -> Unit | None:
        """Observe the unit called `name` now, or return None if it is gone."""
        self.connect()
        if not _is_usable_name(name):
            return None
        path = posixpath.join(self.root, name)
        with self.operation("open", path):
            entry = self.stat_entry(path)
        if entry is None or entry.kind == "other":
            return None
        if entry.kind == "file":
            return Unit(name, False, entry.size, entry.mtime)
        size, mtime = self.summarize_folder(path, entry.mtime, depth=1)
        return Unit(name, True, size, mtime)

    def summarize_folder(self, path: str, mtime: float, depth: int) -> tuple[int, float]:
        """Return the total size of the visible files below `path` and the newest mtime.

        Folder mtimes count too, because adding or deleting an entry changes them even
        when the entry is an empty file or a dot file.
        """
        self.check_depth(path, depth)
        total = 0
        newest = mtime
        for entry in self.visible_entries(path):
            if entry.kind == "dir":
                size, entry_mtime = self.summarize_folder(
                    posixpath.join(path, entry.name), entry.mtime, depth + 1
                )
            else:
                size, entry_mtime = entry.size, entry.mtime
            total += size
            newest = max(newest, entry_mtime)
        return total, newest

    def download_file(self, path: str, target_dir: Path, name: str, created: list[Path]) -> None:
        local_path, handle = _create_local_file(target_dir, safe_filename(name))
        created.append(local_path)
        with handle, self.operation("read", path):
            self.read_file(path, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def download_tree(self, path: str, local_dir: Path, created: list[Path], depth: int) -> None:
        self.check_depth(path, depth)
        for entry in self.visible_entries(path):
            child = posixpath.join(path, entry.name)
            if entry.kind == "dir":
                folder = _create_local_dir(local_dir, _folder_name(entry.name))
                created.append(folder)
                self.download_tree(child, folder, created, depth + 1)
            else:
                self.download_file(child, local_dir, entry.name, created)

    def remove_tree(self, path: str, depth: int) -> None:
        """Delete a folder with all of its entries, dot files and links included."""
        self.check_depth(path, depth)
        with self.operation("list", path):
            entries = self.list_entries(path)
        for entry in entries:
            if not _is_usable_name(entry.name):
                continue
            child = posixpath.join(path, entry.name)
            if entry.kind == "dir":
                self.remove_tree(child, depth + 1)
            else:
                with self.operation("delete", child):
                    self.delete_file(child)
        with self.operation("delete folder", path):
            self.delete_dir(path)

    def check_depth(self, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise LocationError(
                f"Folder {self.display_path(path)!r} {self.where()} is nested more than "
                f"{MAX_DEPTH} levels deep. Flatten it, because Mailroom does not follow it further."
            )


def _is_usable_name(name: str) -> bool:
    """Tell whether a listed name can be joined to a remote path as one component."""
    if name in ("", ".", ".."):
        return False
    return not any(character in name for character in "/\x00\r\n")


def _subfolder_parts(subfolder: str | None) -> list[str]:
    if not subfolder:
        return []
    parts = subfolder.replace("\\", "/").split("/")
    return [cleaned for part in parts if (cleaned := sanitize_name(part))]


def _describe(error: OSError) -> str:
    """Return the readable part of an OSError, ending in a full stop."""
    text = error.strerror or str(error) or type(error).__name__
    if error.errno == errno.ENOSPC:
        text = "no space left on the device"
    return text if text.endswith(".") else text + "."


def _folder_name(name: str) -> str:
    return safe_filename(name, fallback_stem="folder")


def _create_local_dir(parent: Path, name: str) -> Path:
    names = _local_names(parent)
    while True:
        folder = parent / names.claim(name)
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder


def _create_local_file(directory: Path, name: str) -> tuple[Path, BinaryIO]:
    """Create a new file named `name`, or "name (2)" and so on if taken, and open it."""
    names = _local_names(directory)
    while True:
        path = directory / names.claim(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            descriptor = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        return path, os.fdopen(descriptor, "wb")


def _local_names(directory: Path) -> UniqueNames:
    """Return the names taken in `directory`, compared case-insensitively.

    Case is ignored because the files may later be copied to Windows or macOS.
    """
    names = UniqueNames()
    for existing in os.listdir(directory):
        names.claim(existing)
    return names


def _delete_created(created: list[Path]) -> None:
    for path in reversed(created):
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(path.lstat().st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
