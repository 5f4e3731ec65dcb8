"""Settings read from the environment once per process and passed down.

The web factory and the Celery entry point call :func:`load_settings`; nothing
else reads ``os.environ``. A ``.env`` file in the working directory is loaded
first for development; real environment variables win over it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it and the fix."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    secret_key: str
    encryption_keys: tuple[str, ...]
    files_root: Path
    public_url: str | None = None
    ca_file: Path | None = None
    beat_tick_seconds: float = 5.0
    oauth_providers: dict[str, dict[str, object]] = field(default_factory=dict)
    log_format: str = "text"
    # Celery's lines for every beat tick and outbox dispatch; off keeps logs readable.
    log_routine_tasks: bool = False
    testing: bool = False
    http_timeout: float = 15.0
    mail_timeout: float = 30.0
    fetch_batch_size: int = 50
    health_beat_max_age: float | None = None
    flower_url: str | None = None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to seconds, e.g. 5") from None


def load_settings(env_file: Path | None = None) -> Settings:
    """Build :class:`Settings` from the environment (and ``.env`` when present)."""
    load_dotenv(env_file or Path.cwd() / ".env", override=False)
    instance = BASE_DIR / "instance"

    secret_key = os.environ.get("SECRET_KEY", "")
    if not secret_key:
        raise ConfigError(
            "SECRET_KEY is not set; run `make env` to write a .env file with fresh keys, "
            "or export SECRET_KEY to a long random string"
        )
    keys = tuple(k.strip() for k in os.environ.get("ENCRYPTION_KEYS", "").split(",") if k.strip())
    if not keys:
        raise ConfigError(
            "ENCRYPTION_KEYS is not set; run `make env`, or export one or more comma-separated "
            "Fernet keys (newest first) made with "
            "`python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`"
        )

    providers_raw = os.environ.get("OAUTH_PROVIDERS", "")
    providers: dict[str, dict[str, object]] = {}
    if providers_raw:
        try:
            providers = json.loads(providers_raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"OAUTH_PROVIDERS is not valid JSON ({exc}); fix the value") from None
        if not isinstance(providers, dict):
            raise ConfigError("OAUTH_PROVIDERS must be a JSON object keyed by provider name")

    ca_file = os.environ.get("MAIL_CA_FILE") or None
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"MAIL_CA_FILE={ca_file!r} does not exist; point it at a PEM bundle")

    log_format = os.environ.get("LOG_FORMAT", "text")
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={log_format!r} is not valid; use text or json")

    routine = os.environ.get("LOG_ROUTINE_TASKS", "0").strip().lower()
    if routine not in ("0", "1", "false", "true", "no", "yes", ""):
        raise ConfigError(f"LOG_ROUTINE_TASKS={routine!r} is not valid; use 1 or 0")

    return Settings(
        database_url=os.environ.get("DATABASE_URL") or f"sqlite:///{instance / 'mailroom.db'}",
        redis_url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        secret_key=secret_key,
        encryption_keys=keys,
        files_root=Path(os.environ.get("FILES_ROOT") or instance / "files"),
        public_url=(os.environ.get("PUBLIC_URL") or "").rstrip("/") or None,
        ca_file=Path(ca_file) if ca_file else None,
        beat_tick_seconds=_env_float("BEAT_TICK_SECONDS", 5.0),
        oauth_providers=providers,
        log_format=log_format,
        log_routine_tasks=routine in ("1", "true", "yes"),
        http_timeout=_env_float("HTTP_TIMEOUT", 15.0),
        mail_timeout=_env_float("MAIL_TIMEOUT", 30.0),
        fetch_batch_size=int(_env_float("FETCH_BATCH_SIZE", 50)),
        health_beat_max_age=_env_float("HEALTH_BEAT_MAX_AGE", 0.0) or None,
        flower_url=os.environ.get("FLOWER_URL") or None,
    )
