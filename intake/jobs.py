"""Turning extracted files into committed jobs plus ledger rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extraction import ExtractedFile, MessageInfo
from models import (
    Aggregation,
    Connector,
    Job,
    JobFile,
    JobKind,
    Language,
    LedgerState,
    ProcessedMessage,
)
from outgoing import notifications
from robotcode import rules
from storage import FileStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectorSettings:
    """A plain copy of the connector, so a run holds no ORM state across sessions."""

    id: int
    name: str
    job_kind: JobKind
    aggregation: Aggregation
    client_id: int
    budget_code: str | None
    person_responsible_id: int | None
    source_language_id: int | None
    target_language_ids: tuple[int, ...]
    service_id: int | None
    specialization_id: int | None
    auth_method: str
    host: str
    port: int
    use_ssl: bool
    username: str
    folder: str
    mail_account_id: int | None
    provider: str | None
    password_encrypted: bytes | None
    private_key_encrypted: bytes | None = None
    known_host_key: str | None = None
    ftp_tls: bool = False
    source_location: str = "email"
    after_processing: str = "delete"
    move_to_folder: str | None = None
    quarantine_folder: str | None = None
    process_mail_after: datetime | None = None
    rules: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    notifications: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(cls, connector: Connector) -> ConnectorSettings:
        return cls(
            id=connector.id,
            name=connector.name,
            job_kind=connector.job_kind,
            aggregation=connector.aggregation,
            client_id=connector.client_id,
            budget_code=connector.budget_code,
            person_responsible_id=connector.person_responsible_id,
            source_language_id=connector.source_language_id,
            target_language_ids=tuple(lang.id for lang in connector.target_languages),
            service_id=connector.service_id,
            specialization_id=connector.specialization_id,
            auth_method=connector.auth_method.value,
            host=connector.host,
            port=connector.port,
            use_ssl=connector.use_ssl,
            username=connector.username,
            folder=connector.folder,
            mail_account_id=connector.mail_account_id,
            provider=connector.mail_account.provider if connector.mail_account else None,
            password_encrypted=connector.password_encrypted,
            private_key_encrypted=connector.private_key_encrypted,
            known_host_key=connector.known_host_key,
            ftp_tls=connector.ftp_tls,
            source_location=connector.source_location.value,
            after_processing=connector.after_processing.value,
            move_to_folder=connector.move_to_folder,
            quarantine_folder=connector.quarantine_folder,
            process_mail_after=connector.process_mail_after,
            rules=dict(connector.rules or {}),
            options=dict(connector.options or {}),
            notifications=dict(connector.notifications or {}),
        )


@dataclass
class PreparedMessage:
    """A fetched message whose files are extracted to the work directory."""

    uid: int
    content_hash: str
    info: MessageInfo
    files: list[ExtractedFile]
    warnings: list[str] = field(default_factory=list)


def _default_job_name(
    settings: ConnectorSettings, messages: list[PreparedMessage], file_name: str | None
) -> str:
    if file_name is not None:
        return file_name[:300]
    subject = messages[0].info.subject if messages else None
    if len(messages) == 1 and subject:
        return subject[:300]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{settings.name}: {len(messages)} e-mails, {stamp}"[:300]


def _job_name(
    settings: ConnectorSettings,
    messages: list[PreparedMessage],
    files: list[ExtractedFile],
    file_name: str | None,
) -> str:
    default = _default_job_name(settings, messages, file_name)
    if not settings.rules.get("job_name"):
        return default
    first = messages[0].info
    name = rules.job_name(
        settings.rules,
        subject=first.subject or "",
        sender=first.sender or "",
        file_name=file_name or "",
        files=[f.name for f in files],
        connector=settings.name,
        date=first.date or datetime.now(UTC),
    )
    return name or default


def _new_job(
    session: Session,
    settings: ConnectorSettings,
    run_id: int,
    messages: list[PreparedMessage],
    files: list[ExtractedFile],
    store: FileStore,
    stored: list[str],
    file_name: str | None,
) -> Job:
    first = messages[0].info
    job = Job(
        kind=settings.job_kind,
        name=_job_name(settings, messages, files, file_name),
        deadline=rules.deadline(settings.rules, first.date or datetime.now(UTC)),
        notes=settings.rules.get("notes") or None,
        client_id=settings.client_id,
        budget_code=settings.budget_code,
        connector_id=settings.id,
        person_responsible_id=settings.person_responsible_id,
        source_language_id=settings.source_language_id,
        service_id=settings.service_id,
        specialization_id=settings.specialization_id,
        run_id=run_id,
        source_sender=first.sender,
        source_subject=first.subject,
        source_date=first.date,
        source_message_id=first.message_id,
    )
    if settings.target_language_ids:
        job.target_languages = list(
            session.scalars(
                sa.select(Language).where(Language.id.in_(settings.target_language_ids))
            )
        )
    for extracted in files:
        storage_name = store.add(extracted.path, sync_directory=False)
        stored.append(storage_name)
        job.files.append(
            JobFile(
                original_name=extracted.name,
                storage_name=storage_name,
                content_type=extracted.content_type,
                size=extracted.size,
                sha256=extracted.sha256,
            )
        )
    session.add(job)
    return job


def commit_jobs(
    session: Session,
    settings: ConnectorSettings,
    run_id: int,
    uidvalidity: int,
    messages: list[PreparedMessage],
    store: FileStore,
) -> list[int]:
    """Create the jobs for ``messages`` and their ledger rows in one transaction.

    Returns the ids of the new jobs. On failure the transaction is rolled back,
    the files already moved into the store are removed, and the error is
    re-raised; the messages stay in the folder.
    """
    stored: list[str] = []
    jobs: list[tuple[PreparedMessage, Job]] = []
    try:
        if settings.aggregation == Aggregation.BATCH:
            all_files = [f for message in messages for f in message.files]
            job = _new_job(session, settings, run_id, messages, all_files, store, stored, None)
            jobs.extend((message, job) for message in messages)
        elif settings.aggregation == Aggregation.PER_EMAIL:
            for message in messages:
                job = _new_job(
                    session, settings, run_id, [message], message.files, store, stored, None
                )
                jobs.append((message, job))
        else:
            for message in messages:
                for extracted in message.files:
                    job = _new_job(
                        session,
                        settings,
                        run_id,
                        [message],
                        [extracted],
                        store,
                        stored,
                        extracted.name,
                    )
                    jobs.append((message, job))
        session.flush()
        ledgered: set[int] = set()
        for message, job in jobs:
            if message.uid in ledgered:
                continue
            ledgered.add(message.uid)
            session.add(
                ProcessedMessage(
                    connector_id=settings.id,
                    uidvalidity=uidvalidity,
                    uid=message.uid,
                    message_id=message.info.message_id,
                    content_hash=message.content_hash,
                    job_id=job.id,
                    state=LedgerState.COMMITTED,
                )
            )
        for job in {id(job): job for _, job in jobs}.values():
            notifications.job_created(session, job, settings.notifications)
        # The files must be durable before the ledger says the jobs exist.
        store.sync_directories(stored)
        session.commit()
    except BaseException:
        session.rollback()
        for storage_name in stored:
            store.remove(storage_name)
        raise
    return list(dict.fromkeys(job.id for _, job in jobs))


def record_duplicate(
    session: Session,
    settings: ConnectorSettings,
    uidvalidity: int,
    uid: int,
    earlier: ProcessedMessage,
) -> None:
    """Ledger a message already turned into a job under an older UIDVALIDITY."""
    session.add(
        ProcessedMessage(
            connector_id=settings.id,
            uidvalidity=uidvalidity,
            uid=uid,
            message_id=earlier.message_id,
            content_hash=earlier.content_hash,
            job_id=earlier.job_id,
            state=LedgerState.COMMITTED,
        )
    )
    session.commit()


def find_earlier(
    session: Session, connector_id: int, content_hashes: list[str]
) -> dict[str, ProcessedMessage]:
    """Return ledger rows of this connector with one of ``content_hashes``, by hash."""
    if not content_hashes:
        return {}
    rows = session.scalars(
        sa.select(ProcessedMessage).where(
            ProcessedMessage.connector_id == connector_id,
            ProcessedMessage.content_hash.in_(set(content_hashes)),
        )
    )
    return {row.content_hash: row for row in rows}
