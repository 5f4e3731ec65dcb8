"""The "Generate new token" flow: authorization code with PKCE (S256).

``state`` is random, stored only as a hash, bound to the admin and to the
browser session that started the flow, valid for ten minutes and deleted on
first use.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from database import rowcount
from models import MailAccount, OAuthState

from .client import call_token_endpoint, oauth_session
from .crypto import SecretBox
from .errors import ClientConfigError, TokenError
from .providers import Provider
from .tokens import store_token

STATE_LIFETIME = timedelta(minutes=10)


class ConsentError(TokenError):
    """The callback cannot be accepted; the message says why and what to do."""


@dataclass(frozen=True)
class ConsentResult:
    account: MailAccount
    return_to: str


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def start_consent(
    session: Session,
    *,
    account: MailAccount,
    provider: Provider,
    box: SecretBox,
    user_id: int,
    session_binding: str,
    redirect_uri: str,
    return_to: str,
    now: datetime,
) -> str:
    """Record a one-time state and return the provider's authorization URL.

    The caller commits the session before redirecting.
    """
    if not account.client_id:
        raise ClientConfigError("Client Id is empty; enter it and save before generating a token")
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    client = oauth_session(provider, account.client_id, None, redirect_uri)
    url, _ = client.create_authorization_url(
        provider.authorization_url,
        state=state,
        code_verifier=verifier,
        login_hint=account.email,
        **provider.authorization_params,
    )
    session.add(
        OAuthState(
            state_hash=_hash(state),
            user_id=user_id,
            session_binding=session_binding,
            mail_account_id=account.id,
            code_verifier_encrypted=box.encrypt(verifier),
            return_to=return_to,
            created_at=now,
            expires_at=now + STATE_LIFETIME,
        )
    )
    return str(url)


def finish_consent(
    session: Session,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    error_description: str | None,
    user_id: int,
    session_binding: str,
    providers: dict[str, Provider],
    box: SecretBox,
    redirect_uri: str,
    http_timeout: float,
    now: datetime,
) -> ConsentResult:
    """Check the callback, exchange the code, and store the token encrypted."""
    if not state:
        raise ConsentError("The provider's response has no state; click Generate new token again")
    # Delete first and commit, so a second callback with the same state finds
    # nothing even if the code exchange below is slow or fails.
    row = session.scalars(
        sa.select(OAuthState).where(OAuthState.state_hash == _hash(state))
    ).one_or_none()
    if row is None:
        raise ConsentError(
            "This consent response was already used or is unknown; click Generate new token again"
        )
    deleted = rowcount(session.execute(sa.delete(OAuthState).where(OAuthState.id == row.id)))
    session.commit()
    if deleted != 1:
        raise ConsentError("This consent response was already used; click Generate new token again")

    if row.user_id != user_id or not secrets.compare_digest(row.session_binding, session_binding):
        raise ConsentError(
            "This consent was started from another login session; start again from this browser"
        )
    if row.expires_at < now:
        raise ConsentError(
            "The consent took longer than 10 minutes; click Generate new token again"
        )

    account = session.get(MailAccount, row.mail_account_id)
    if account is None:
        raise ConsentError("The mail account of this consent was deleted")
    if error:
        detail = f": {error_description}" if error_description else ""
        raise ConsentError(f"The provider did not give consent ({error}{detail})")
    if not code:
        raise ConsentError(
            "The provider's response has no authorization code; click Generate new token again"
        )

    provider = providers.get(account.provider)
    if provider is None or account.client_id is None:
        raise ConsentError(f"Provider {account.provider!r} is not configured")
    secret = (
        box.decrypt(account.client_secret_encrypted) if account.client_secret_encrypted else None
    )
    client = oauth_session(provider, account.client_id, secret, redirect_uri)
    verifier = box.decrypt(row.code_verifier_encrypted)
    token = call_token_endpoint(
        provider,
        "exchanging the authorization code",
        lambda: client.fetch_token(
            provider.token_url,
            grant_type="authorization_code",
            code=code,
            code_verifier=verifier,
            timeout=http_timeout,
        ),
    )
    store_token(account, token, box, now)
    account.consented_at = now
    session.commit()
    return ConsentResult(account=account, return_to=row.return_to)


def purge_expired_states(session: Session, now: datetime) -> int:
    result = session.execute(sa.delete(OAuthState).where(OAuthState.expires_at < now))
    return int(rowcount(result) or 0)
