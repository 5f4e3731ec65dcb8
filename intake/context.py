"""What a connector run needs from the process that hosts it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

from database import Database
from mailauth import SecretBox
from mailauth.tokens import TokenManager
from storage import FileStore


@dataclass(frozen=True)
class IntakeContext:
    db: Database
    redis: redis.Redis
    box: SecretBox
    tokens: TokenManager
    store: FileStore
    mail_timeout: float = 30.0
    ca_file: Path | None = None
    fetch_batch_size: int = 50
    # A batch also stops at this many bytes, so big messages come one by one.
    fetch_batch_bytes: int = 16 * 1024 * 1024
    # A file on a folder, FTP or SFTP source is taken only once its size and
    # modification time have not changed for this long. A run waits for it
    # once, after listing, not once per file.
    location_quiet_seconds: float = 10.0

    @property
    def locations_root(self) -> Path:
        """Where "folder" locations live: a directory under FILES_ROOT."""
        return self.store.root / "locations"
