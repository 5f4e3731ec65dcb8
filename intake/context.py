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
