"""Mail accounts (provider plus address) and the OAuth tokens that belong to them."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime, enum_column, utcnow


class TokenStatus(enum.StrEnum):
    NONE = "none"
    ACTIVE = "active"
    NEEDS_CONSENT = "needs_consent"
    CLIENT_ERROR = "client_error"


class MailAccount(Base):
    """One e-mail address on one OAuth provider.

    Every connector or SMTP setting naming the same provider and address
    shares this row, so one consent serves them all. Secret columns hold
    Fernet tokens, never plain text.
    """

    __tablename__ = "mail_accounts"
    __table_args__ = (sa.UniqueConstraint("provider", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(64))
    email: Mapped[str] = mapped_column(sa.String(254))
    client_id: Mapped[str | None] = mapped_column(sa.String(512))
    client_secret_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    access_token_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    refresh_token_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    token_status: Mapped[TokenStatus] = mapped_column(
        enum_column(TokenStatus), default=TokenStatus.NONE
    )
    token_status_reason: Mapped[str | None] = mapped_column(sa.Text)
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_refresh_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Outcome of the last refresh or health check, e.g. "ok" or the error text.
    last_refresh_outcome: Mapped[str | None] = mapped_column(sa.Text)
    # Set when the people responsible were told that consent is needed, so
    # they are told once; cleared by the next consent.
    consent_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<MailAccount {self.id} {self.provider}:{self.email}>"


class OAuthState(Base):
    """A pending consent: one-time ``state`` with its PKCE verifier.

    Only a SHA-256 of the state is stored, so a leaked table cannot be
    replayed; the row is deleted when the callback uses it.
    """

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    state_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    session_binding: Mapped[str] = mapped_column(sa.String(64))
    mail_account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("mail_accounts.id", ondelete="CASCADE")
    )
    code_verifier_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    return_to: Mapped[str] = mapped_column(sa.String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
