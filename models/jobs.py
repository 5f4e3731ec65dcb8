"""Projects and quotes made from e-mail, their files, and the message ledger."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, UTCDateTime, enum_column, utcnow
from .connectors import Connector, JobKind
from .reference import Client, Language, Service, Specialization
from .users import User

job_target_languages = sa.Table(
    "job_target_languages",
    Base.metadata,
    sa.Column("job_id", sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("language_id", sa.ForeignKey("languages.id", ondelete="RESTRICT"), primary_key=True),
)


class Job(Base):
    """A project or a quote."""

    __tablename__ = "jobs"
    # Serves the job lists: kind filter, newest first, and the keyset cursor.
    __table_args__ = (sa.Index("ix_jobs_kind_created_id", "kind", "created_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(enum_column(JobKind))
    name: Mapped[str] = mapped_column(sa.String(300))
    client_id: Mapped[int] = mapped_column(sa.ForeignKey("clients.id", ondelete="RESTRICT"))
    budget_code: Mapped[str | None] = mapped_column(sa.String(64))
    connector_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("connectors.id", ondelete="SET NULL"), index=True
    )
    person_responsible_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    source_language_id: Mapped[int | None] = mapped_column(sa.ForeignKey("languages.id"))
    service_id: Mapped[int | None] = mapped_column(sa.ForeignKey("services.id"))
    specialization_id: Mapped[int | None] = mapped_column(sa.ForeignKey("specializations.id"))
    run_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("connector_runs.id", ondelete="SET NULL")
    )

    # The e-mail the job came from; with batch aggregation, the first of them.
    source_sender: Mapped[str | None] = mapped_column(sa.String(998))
    source_subject: Mapped[str | None] = mapped_column(sa.Text)
    source_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_message_id: Mapped[str | None] = mapped_column(sa.String(998))
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notes: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    client: Mapped[Client] = relationship()
    connector: Mapped[Connector | None] = relationship()
    person_responsible: Mapped[User | None] = relationship()
    source_language: Mapped[Language | None] = relationship()
    target_languages: Mapped[list[Language]] = relationship(
        secondary=job_target_languages, order_by=Language.name
    )
    service: Mapped[Service | None] = relationship()
    specialization: Mapped[Specialization | None] = relationship()
    files: Mapped[list[JobFile]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobFile.id"
    )


class JobFile(Base):
    """A stored file. ``original_name`` is data; ``storage_name`` is the path."""

    __tablename__ = "job_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    original_name: Mapped[str] = mapped_column(sa.String(255))
    storage_name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    content_type: Mapped[str] = mapped_column(sa.String(255))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))

    job: Mapped[Job] = relationship(back_populates="files")


class LedgerState(enum.StrEnum):
    COMMITTED = "committed"  # jobs exist; the after-processing action may not have run
    DELETED = "deleted"  # the after-processing action (delete, move, mark seen) ran
    SKIPPED = "skipped"  # a Robot Code rule skipped the message; it stays untouched


class ProcessedMessage(Base):
    """Ledger of messages turned into jobs, so no message makes a job twice.

    A row is written in the same transaction as the jobs. If the process dies
    before the IMAP delete, the next run finds the row and only deletes.
    Message-ID plus content hash catch the same message after the folder's
    UIDVALIDITY changed.
    """

    __tablename__ = "processed_messages"
    __table_args__ = (
        sa.UniqueConstraint("connector_id", "uidvalidity", "uid"),
        sa.Index("ix_processed_messages_identity", "connector_id", "content_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    connector_id: Mapped[int] = mapped_column(sa.ForeignKey("connectors.id", ondelete="CASCADE"))
    uidvalidity: Mapped[int] = mapped_column(sa.BigInteger)
    uid: Mapped[int] = mapped_column(sa.BigInteger)
    message_id: Mapped[str | None] = mapped_column(sa.String(998))
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    state: Mapped[LedgerState] = mapped_column(
        enum_column(LedgerState), default=LedgerState.COMMITTED
    )
    committed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
