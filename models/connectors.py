"""Smart Connectors, their runs and the problems a run met."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, UTCDateTime, enum_column, utcnow
from .mail_accounts import MailAccount, TokenStatus
from .reference import Client, Language, Service, Specialization
from .users import User


class JobKind(enum.StrEnum):
    PROJECT = "project"
    QUOTE = "quote"


class Aggregation(enum.StrEnum):
    SEPARATELY = "separately"  # one job per top-level file
    PER_EMAIL = "per_email"  # one job per e-mail with all its files
    BATCH = "batch"  # one job for all files found in one scan


class SourceLocation(enum.StrEnum):
    EMAIL = "email"
    FOLDER = "folder"  # a directory under FILES_ROOT/locations
    FTP = "ftp"
    SFTP = "sftp"


class AfterProcessing(enum.StrEnum):
    DELETE = "delete"
    MOVE = "move"
    MARK_SEEN = "mark_seen"


class AuthMethod(enum.StrEnum):
    OAUTH2 = "oauth2"
    PASSWORD = "password"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished, but some messages were left with a problem
    FAILED = "failed"


connector_target_languages = sa.Table(
    "connector_target_languages",
    Base.metadata,
    sa.Column("connector_id", sa.ForeignKey("connectors.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("language_id", sa.ForeignKey("languages.id", ondelete="RESTRICT"), primary_key=True),
)


class Connector(Base):
    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    job_kind: Mapped[JobKind] = mapped_column(enum_column(JobKind), default=JobKind.PROJECT)
    active: Mapped[bool] = mapped_column(default=True)
    client_id: Mapped[int] = mapped_column(sa.ForeignKey("clients.id", ondelete="RESTRICT"))
    budget_code: Mapped[str | None] = mapped_column(sa.String(64))
    aggregation: Mapped[Aggregation] = mapped_column(
        enum_column(Aggregation), default=Aggregation.SEPARATELY
    )

    auth_method: Mapped[AuthMethod] = mapped_column(
        enum_column(AuthMethod), default=AuthMethod.OAUTH2
    )
    host: Mapped[str] = mapped_column(sa.String(255))
    port: Mapped[int] = mapped_column(default=993)
    use_ssl: Mapped[bool] = mapped_column(default=True)
    username: Mapped[str] = mapped_column(sa.String(254))
    password_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    folder: Mapped[str] = mapped_column(sa.String(255), default="INBOX")
    mail_account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("mail_accounts.id", ondelete="SET NULL")
    )
    source_location: Mapped[SourceLocation] = mapped_column(
        enum_column(SourceLocation), default=SourceLocation.EMAIL
    )
    # SFTP input: the private key (encrypted) and the server's expected key.
    private_key_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    known_host_key: Mapped[str | None] = mapped_column(sa.Text)
    ftp_tls: Mapped[bool] = mapped_column(default=False)
    after_processing: Mapped[AfterProcessing] = mapped_column(
        enum_column(AfterProcessing), default=AfterProcessing.DELETE
    )
    move_to_folder: Mapped[str | None] = mapped_column(sa.String(255))
    # The IMAP folder that quarantined messages move to; None leaves them in ``folder``.
    quarantine_folder: Mapped[str | None] = mapped_column(sa.String(255))
    # On first activation, mail received before this is left alone.
    process_mail_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Robot Code parts that have no column of their own: rules, options,
    # notifications, weekly schedule. Validated by robotcode before saving.
    rules: Mapped[dict[str, object]] = mapped_column(sa.JSON, default=dict)
    options: Mapped[dict[str, object]] = mapped_column(sa.JSON, default=dict)
    notifications: Mapped[dict[str, object]] = mapped_column(sa.JSON, default=dict)
    weekly_schedule: Mapped[dict[str, object] | None] = mapped_column(sa.JSON)

    person_responsible_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    source_language_id: Mapped[int | None] = mapped_column(sa.ForeignKey("languages.id"))
    service_id: Mapped[int | None] = mapped_column(sa.ForeignKey("services.id"))
    specialization_id: Mapped[int | None] = mapped_column(sa.ForeignKey("specializations.id"))

    interval_minutes: Mapped[int] = mapped_column(default=5)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    client: Mapped[Client] = relationship()
    mail_account: Mapped[MailAccount | None] = relationship()
    person_responsible: Mapped[User | None] = relationship()
    source_language: Mapped[Language | None] = relationship()
    target_languages: Mapped[list[Language]] = relationship(
        secondary=connector_target_languages, order_by=Language.name
    )
    service: Mapped[Service | None] = relationship()
    specialization: Mapped[Specialization | None] = relationship()

    @property
    def waits_for_consent(self) -> bool:
        """True for an OAuth2 e-mail connector whose account never got a token.

        Beat skips such a connector until consent, so its next run time is not
        when it will run.
        """
        return (
            self.source_location == SourceLocation.EMAIL
            and self.auth_method == AuthMethod.OAUTH2
            and (self.mail_account is None or self.mail_account.token_status == TokenStatus.NONE)
        )

    def __repr__(self) -> str:
        return f"<Connector {self.id} {self.name!r}>"


class ConnectorRun(Base):
    __tablename__ = "connector_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    connector_id: Mapped[int] = mapped_column(
        sa.ForeignKey("connectors.id", ondelete="CASCADE"), index=True
    )
    trigger: Mapped[str] = mapped_column(sa.String(32))  # schedule, manual, cli
    status: Mapped[RunStatus] = mapped_column(enum_column(RunStatus), default=RunStatus.RUNNING)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    messages_seen: Mapped[int] = mapped_column(default=0)
    jobs_created: Mapped[int] = mapped_column(default=0)
    messages_deleted: Mapped[int] = mapped_column(default=0)
    messages_skipped: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)

    problems: Mapped[list[RunProblem]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="RunProblem.id"
    )


class StoreRole(enum.StrEnum):
    SUCCESS = "success"
    ERROR = "error"


class ConnectorStore(Base):
    """Where copies of a connector's files go after success, or after an error."""

    __tablename__ = "connector_stores"
    __table_args__ = (sa.UniqueConstraint("connector_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connector_id: Mapped[int] = mapped_column(sa.ForeignKey("connectors.id", ondelete="CASCADE"))
    role: Mapped[StoreRole] = mapped_column(enum_column(StoreRole))
    location: Mapped[SourceLocation] = mapped_column(enum_column(SourceLocation))
    host: Mapped[str | None] = mapped_column(sa.String(255))
    port: Mapped[int | None]
    username: Mapped[str | None] = mapped_column(sa.String(254))
    password_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    private_key_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    known_host_key: Mapped[str | None] = mapped_column(sa.Text)
    ftp_tls: Mapped[bool] = mapped_column(default=False)
    path: Mapped[str] = mapped_column(sa.String(1024), default="")


class MessageFailure(Base):
    """A message that failed; after ``max_attempts`` runs it is quarantined.

    ``uidvalidity`` and ``uid`` name the message in the connector's folder.
    A quarantined message stays there, skipped by runs, or moves to the
    connector's quarantine folder, until someone asks for it to be processed
    again.
    """

    __tablename__ = "message_failures"
    __table_args__ = (sa.UniqueConstraint("connector_id", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connector_id: Mapped[int] = mapped_column(
        sa.ForeignKey("connectors.id", ondelete="CASCADE"), index=True
    )
    uidvalidity: Mapped[int] = mapped_column(sa.BigInteger)
    uid: Mapped[int] = mapped_column(sa.BigInteger)
    message_id: Mapped[str | None] = mapped_column(sa.String(998))
    sender: Mapped[str | None] = mapped_column(sa.String(998))
    subject: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(sa.Text)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set before the message is moved to the quarantine folder, and cleared
    # again if the move fails. The UIDs come from the server's COPYUID reply,
    # so they stay None when the server sent none.
    moved_to_folder: Mapped[str | None] = mapped_column(sa.String(255))
    moved_uidvalidity: Mapped[int | None] = mapped_column(sa.BigInteger)
    moved_uid: Mapped[int | None] = mapped_column(sa.BigInteger)


class RunProblem(Base):
    """A message a run could not turn into a job; it stays in the folder."""

    __tablename__ = "run_problems"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(
        sa.ForeignKey("connector_runs.id", ondelete="CASCADE"), index=True
    )
    uid: Mapped[int | None]
    message_id: Mapped[str | None] = mapped_column(sa.String(998))
    sender: Mapped[str | None] = mapped_column(sa.String(998))
    subject: Mapped[str | None] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)

    run: Mapped[ConnectorRun] = relationship(back_populates="problems")
