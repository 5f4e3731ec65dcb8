"""Services a process builds once from its settings and hands to the code it runs."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from config import Settings
from database import Database
from intake import IntakeContext
from mailauth import Provider, SecretBox, load_providers
from mailauth.tokens import TokenManager
from outgoing.mailer import Mailer
from storage import FileStore


@dataclass
class Services:
    settings: Settings
    db: Database
    redis: redis.Redis
    box: SecretBox
    providers: dict[str, Provider]
    store: FileStore
    tokens: TokenManager
    mailer: Mailer

    def intake_context(self) -> IntakeContext:
        return IntakeContext(
            db=self.db,
            redis=self.redis,
            box=self.box,
            tokens=self.tokens,
            store=self.store,
            mail_timeout=self.settings.mail_timeout,
            ca_file=self.settings.ca_file,
            fetch_batch_size=self.settings.fetch_batch_size,
        )


def build_services(settings: Settings) -> Services:
    """Create the engine, Redis client and helpers; opens no connection yet."""
    db = Database(settings.database_url)
    redis_client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=5
    )
    box = SecretBox(settings.encryption_keys)
    providers = load_providers(settings.oauth_providers)
    store = FileStore(settings.files_root)
    tokens = TokenManager(db, redis_client, box, providers, http_timeout=settings.http_timeout)
    mailer = Mailer(box, tokens, timeout=settings.mail_timeout, ca_file=settings.ca_file)
    return Services(settings, db, redis_client, box, providers, store, tokens, mailer)
