"""Stored tokens of mail accounts, and refreshing them once across workers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from sqlalchemy.orm import Session

from database import Database
from models import MailAccount, TokenStatus
from outgoing import notifications

from .client import call_token_endpoint, oauth_session
from .crypto import SecretBox
from .errors import ClientConfigError, ConsentRequired, TemporaryTokenError, TokenError
from .providers import Provider

logger = logging.getLogger(__name__)

# Refresh this long before expiry so a token never expires mid-session.
REFRESH_MARGIN = timedelta(minutes=5)


def store_token(account: MailAccount, token: dict[str, Any], box: SecretBox, now: datetime) -> None:
    """Write a token response onto ``account``; the caller commits.

    A response without ``refresh_token`` keeps the stored one, because
    providers that do not rotate omit it.
    """
    account.access_token_encrypted = box.encrypt(token["access_token"])
    if token.get("refresh_token"):
        account.refresh_token_encrypted = box.encrypt(token["refresh_token"])
    expires_in = token.get("expires_in")
    account.token_expires_at = (
        now + timedelta(seconds=int(expires_in)) if expires_in is not None else None
    )
    account.token_status = TokenStatus.ACTIVE
    account.token_status_reason = None
    account.last_refresh_at = now
    account.last_refresh_outcome = "ok"
    account.consent_notified_at = None


def mark_account(session: Session, account_id: int, status: TokenStatus, reason: str) -> None:
    """Record a token failure; a needed consent is also announced, once."""
    account = session.get(MailAccount, account_id)
    if account is None:
        return
    account.token_status = status
    account.token_status_reason = reason
    account.last_refresh_outcome = reason
    if status == TokenStatus.NEEDS_CONSENT:
        notifications.consent_needed(session, account, reason)
    session.commit()


def _usable_token(account: MailAccount, box: SecretBox, now: datetime) -> str | None:
    if account.token_status != TokenStatus.ACTIVE or account.access_token_encrypted is None:
        return None
    if account.token_expires_at is not None and account.token_expires_at - REFRESH_MARGIN <= now:
        return None
    return box.decrypt(account.access_token_encrypted)


class TokenManager:
    """Hands out valid access tokens, refreshing under a Redis lock per account."""

    def __init__(
        self,
        db: Database,
        redis_client: redis.Redis,
        box: SecretBox,
        providers: dict[str, Provider],
        *,
        http_timeout: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.redis = redis_client
        self.box = box
        self.providers = providers
        self.http_timeout = http_timeout
        self.clock = clock
        # A refresh is one HTTP call plus a commit. A worker that dies holding
        # the lock delays other refreshes of the account by at most this long.
        self.lock_timeout = 2 * http_timeout + 5

    def access_token(self, account_id: int, *, rejected: str | None = None) -> str:
        """Return a valid access token, refreshing it when it is near expiry.

        ``rejected`` is a token a server just refused: it is refreshed even
        if it has not expired, unless another worker already replaced it.
        Raises ConsentRequired, ClientConfigError or TemporaryTokenError.
        """
        with self.db.session() as session:
            account = self._load(session, account_id)
            token = _usable_token(account, self.box, self.clock())
        if token is not None and token != rejected:
            return token

        lock = self.redis.lock(
            f"mailroom:token-refresh:{account_id}",
            timeout=self.lock_timeout,
            blocking_timeout=self.lock_timeout,
        )
        if not lock.acquire():
            raise TemporaryTokenError(
                f"Timed out waiting for another worker to refresh the token of account {account_id}"
            )
        try:
            # Re-read inside the lock: another worker may have refreshed already.
            with self.db.session() as session:
                account = self._load(session, account_id)
                token = _usable_token(account, self.box, self.clock())
                if token is not None and token != rejected:
                    return token
                return self._refresh(session, account)
        finally:
            lock.release()

    def check(self, account_id: int, max_age: timedelta) -> str:
        """Refresh the token if it is near expiry or older than ``max_age``.

        Regular refreshes keep refresh tokens alive at providers that expire
        unused ones (Microsoft, after 90 days). Returns the recorded outcome.
        """
        with self.db.session() as session:
            account = self._load(session, account_id)
            last = account.last_refresh_at or account.consented_at
            stale = last is None or last + max_age <= self.clock()
            rejected = (
                self.box.decrypt(account.access_token_encrypted)
                if (stale and account.access_token_encrypted)
                else None
            )
        try:
            self.access_token(account_id, rejected=rejected)
        except TokenError as exc:
            return str(exc)
        return "ok"

    def _load(self, session: Session, account_id: int) -> MailAccount:
        account = session.get(MailAccount, account_id)
        if account is None:
            raise ConsentRequired(f"Mail account {account_id} no longer exists")
        if account.token_status == TokenStatus.NEEDS_CONSENT:
            raise ConsentRequired(
                account.token_status_reason
                or f'{account.email} needs new consent: click "Generate new token"'
            )
        return account

    def _refresh(self, session: Session, account: MailAccount) -> str:
        provider = self.providers.get(account.provider)
        if provider is None:
            raise ClientConfigError(
                f"Provider {account.provider!r} of {account.email} is not configured; "
                "add it to OAUTH_PROVIDERS"
            )
        if account.token_status == TokenStatus.NONE:
            # Never consented: nothing was lost, so nobody needs an alert.
            raise ConsentRequired(
                f'{account.email} has no OAuth2 token yet; click "Generate new token"'
            )
        if account.refresh_token_encrypted is None or account.client_id is None:
            reason = (
                f'{account.email} has no refresh token; click "Generate new token" to give consent'
            )
            mark_account(session, account.id, TokenStatus.NEEDS_CONSENT, reason)
            raise ConsentRequired(reason)

        client = oauth_session(
            provider,
            account.client_id,
            self.box.decrypt(account.client_secret_encrypted)
            if account.client_secret_encrypted
            else None,
        )
        refresh_token = self.box.decrypt(account.refresh_token_encrypted)
        logger.info("refreshing access token for mail account %s", account.id)
        try:
            token = call_token_endpoint(
                provider,
                "refreshing the access token",
                lambda: client.refresh_token(
                    provider.token_url, refresh_token=refresh_token, timeout=self.http_timeout
                ),
            )
        except ConsentRequired as exc:
            mark_account(session, account.id, TokenStatus.NEEDS_CONSENT, str(exc))
            raise
        except ClientConfigError as exc:
            mark_account(session, account.id, TokenStatus.CLIENT_ERROR, str(exc))
            raise
        except TemporaryTokenError as exc:
            account.last_refresh_outcome = str(exc)
            session.commit()
            raise

        # Commit at once: a rotated refresh token exists only in this response.
        store_token(account, token, self.box, self.clock())
        session.commit()
        logger.info("refreshed access token for mail account %s", account.id)
        return str(token["access_token"])
