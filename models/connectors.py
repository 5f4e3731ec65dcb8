"""Smart Connectors, their runs and the problems a run met."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, UTCDateTime, enum_column, utcnow
from .mail_accounts import MailAccount
from .reference import Client, Language, Service, Specialization
from .users import User


class JobKind(enum.StrEnum):
    PROJECT = "project"
    QUOTE = "quote"


class Aggregation(enum.StrEnum):
    SEPARATELY = "separately"  # one job per top-level file
    BATCH = "batch"  # one job for all files found in one scan


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
    error: Mapped[str | None] = mapped_column(sa.Text)

    problems: Mapped[list[RunProblem]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="RunProblem.id"
    )


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
