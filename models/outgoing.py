"""Outgoing e-mail: branches, SMTP settings and the notification outbox."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, UTCDateTime, enum_column, utcnow
from .mail_accounts import MailAccount


class SmtpAuthMethod(enum.StrEnum):
    NONE = "none"
    PASSWORD = "password"
    OAUTH2 = "oauth2"


class ConnectionType(enum.StrEnum):
    NOT_SECURED = "none"  # plain SMTP; only for a relay on the same host
    SSL = "ssl"  # implicit TLS, usually port 465
    TLS = "tls"  # STARTTLS, required; usually port 587


class Branch(Base):
    __tablename__ = "branches"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    use_own_smtp: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    smtp: Mapped[SmtpSettings | None] = relationship(
        back_populates="branch", cascade="all, delete-orphan", uselist=False
    )


class SmtpSettings(Base):
    """The company's SMTP server (``branch_id`` NULL) or one branch's own."""

    __tablename__ = "smtp_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    branch_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("branches.id", ondelete="CASCADE"), unique=True
    )
    auth_method: Mapped[SmtpAuthMethod] = mapped_column(
        enum_column(SmtpAuthMethod), default=SmtpAuthMethod.NONE
    )
    host: Mapped[str | None] = mapped_column(sa.String(255))
    port: Mapped[int | None]
    email_address: Mapped[str | None] = mapped_column(sa.String(254))
    connection_type: Mapped[ConnectionType] = mapped_column(
        enum_column(ConnectionType), default=ConnectionType.TLS
    )
    login: Mapped[str | None] = mapped_column(sa.String(254))
    password_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    mail_account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("mail_accounts.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    branch: Mapped[Branch | None] = relationship(back_populates="smtp")
    mail_account: Mapped[MailAccount | None] = relationship()


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutboxMessage(Base):
    """A notification written in the same transaction as the event behind it.

    A Celery task sends it later; ``message_id`` stays the same across
    retries so a receiving server can recognise a repeat.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (sa.Index("ix_outbox_messages_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(sa.String(64))
    branch_id: Mapped[int | None] = mapped_column(sa.ForeignKey("branches.id", ondelete="SET NULL"))
    # The mail account a "needs consent" notice is about; it must not be
    # sent through that same account.
    about_account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("mail_accounts.id", ondelete="SET NULL")
    )
    recipients: Mapped[str] = mapped_column(sa.Text)  # comma-separated addresses
    reply_to: Mapped[str | None] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(998))
    body: Mapped[str] = mapped_column(sa.Text)
    message_id: Mapped[str] = mapped_column(sa.String(255), unique=True)
    status: Mapped[OutboxStatus] = mapped_column(
        enum_column(OutboxStatus), default=OutboxStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
