"""What Mailroom tells people, written to the outbox with the event itself."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parseaddr

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Connector, Job, MailAccount, User

from .outbox import enqueue


def _languages(job: Job) -> str:
    source = job.source_language.code if job.source_language else "?"
    targets = ", ".join(language.code for language in job.target_languages) or "?"
    return f"{source} > {targets}"


def job_created(session: Session, job: Job) -> None:
    """Tell the person responsible about a new project or quote."""
    person = job.person_responsible
    if person is None:
        return
    kind = job.kind.value.capitalize()
    files = "\n".join(f"  - {f.original_name} ({f.size} bytes)" for f in job.files)
    body = (
        f'{kind} #{job.id} "{job.name}" was created from an e-mail.\n\n'
        f"Client: {job.client.name}\n"
        f"Budget code: {job.budget_code or '-'}\n"
        f"Languages: {_languages(job)}\n"
        f"Service: {job.service.name if job.service else '-'}\n"
        f"Specialization: {job.specialization.name if job.specialization else '-'}\n"
        f"From: {job.source_sender or '-'}\n"
        f"Subject: {job.source_subject or '-'}\n\n"
        f"Files:\n{files}\n"
    )
    enqueue(
        session,
        event=f"{job.kind.value}_created",
        recipients=[person.email],
        subject=f"New {job.kind.value} #{job.id}: {job.name}",
        body=body,
        reply_to=_address(job.source_sender),
        branch_id=job.client.branch_id,
    )


def run_failed(session: Session, connector: Connector, run_id: int, error: str) -> None:
    person = connector.person_responsible
    if person is None:
        return
    enqueue(
        session,
        event="processing_error",
        recipients=[person.email],
        subject=f'Smart Connector "{connector.name}" failed',
        body=(
            f'Run {run_id} of the Smart Connector "{connector.name}" failed:\n\n{error}\n\n'
            "The e-mails stay in the folder and are processed once the problem is fixed.\n"
        ),
        branch_id=connector.client.branch_id,
    )


def consent_needed(session: Session, account: MailAccount, reason: str) -> None:
    """Tell the people responsible once that ``account`` needs a new consent."""
    if account.consent_notified_at is not None:
        return
    people = set(
        session.scalars(
            sa.select(User.email)
            .join(Connector, Connector.person_responsible_id == User.id)
            .where(Connector.mail_account_id == account.id)
        )
    )
    people.update(
        session.scalars(sa.select(User.email).where(User.is_admin.is_(True), User.is_active))
    )
    enqueue(
        session,
        event="token_needs_consent",
        recipients=sorted(people),
        subject=f"Mailroom needs a new consent for {account.email}",
        body=(
            f"The OAuth2 token of {account.email} ({account.provider}) no longer works:\n\n"
            f"{reason}\n\nConnectors and e-mail settings that use this mailbox stop until "
            'someone opens them in Mailroom and clicks "Generate new token".\n'
        ),
        about_account_id=account.id,
    )
    account.consent_notified_at = datetime.now(UTC)


def _address(sender: str | None) -> str | None:
    if not sender:
        return None
    address = parseaddr(sender)[1]
    return address or None
