"""What Mailroom tells people, written to the outbox with the event itself."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Client, Connector, Job, MailAccount, User

from .outbox import enqueue


def _languages(job: Job) -> str:
    source = job.source_language.code if job.source_language else "?"
    targets = ", ".join(language.code for language in job.target_languages) or "?"
    return f"{source} > {targets}"


# Who hears of each event unless the connector's notification settings say otherwise.
DEFAULT_RECIPIENTS = {"person_responsible": True, "client_contact": False}
EVENTS = (
    "project_created",
    "quote_created",
    "processing_error",
    "token_needs_consent",
    "connector_recovered",
)


def recipients_for(
    event: str, settings: dict[str, Any] | None, person: User | None, client: Client | None
) -> list[str]:
    """Return the addresses the connector's settings pick for ``event``."""
    chosen = {**DEFAULT_RECIPIENTS, **((settings or {}).get(event) or {})}
    addresses = []
    if chosen.get("person_responsible") and person is not None:
        addresses.append(person.email)
    if chosen.get("client_contact") and client is not None and client.contact_email:
        addresses.append(client.contact_email)
    return addresses


def job_created(session: Session, job: Job, settings: dict[str, Any] | None = None) -> None:
    """Tell the people the connector names about a new project or quote."""
    event = f"{job.kind.value}_created"
    recipients = recipients_for(event, settings, job.person_responsible, job.client)
    if not recipients:
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
        event=event,
        recipients=recipients,
        subject=f"New {job.kind.value} #{job.id}: {job.name}",
        body=body,
        reply_to=_address(job.source_sender),
        branch_id=job.client.branch_id,
    )


def run_failed(session: Session, connector: Connector, run_id: int, error: str) -> None:
    recipients = recipients_for(
        "processing_error", connector.notifications, connector.person_responsible, connector.client
    )
    enqueue(
        session,
        event="processing_error",
        recipients=recipients,
        subject=f'Smart Connector "{connector.name}" failed',
        body=(
            f'Run {run_id} of the Smart Connector "{connector.name}" failed:\n\n{error}\n\n'
            "The e-mails stay in the folder and are processed once the problem is fixed.\n"
        ),
        branch_id=connector.client.branch_id,
    )


def connector_recovered(session: Session, connector: Connector, run_id: int) -> None:
    recipients = recipients_for(
        "connector_recovered", connector.notifications, connector.person_responsible,
        connector.client,
    )  # fmt: skip
    enqueue(
        session,
        event="connector_recovered",
        recipients=recipients,
        subject=f'Smart Connector "{connector.name}" works again',
        body=(
            f'Run {run_id} of the Smart Connector "{connector.name}" succeeded after failed '
            "runs. E-mails that waited in the folder are being processed.\n"
        ),
        branch_id=connector.client.branch_id,
    )


def consent_needed(session: Session, account: MailAccount, reason: str) -> None:
    """Tell the people responsible once that ``account`` needs a new consent."""
    if account.consent_notified_at is not None:
        return
    people: set[str] = set()
    for connector in session.scalars(
        sa.select(Connector).where(Connector.mail_account_id == account.id)
    ):
        people.update(
            recipients_for(
                "token_needs_consent",
                connector.notifications,
                connector.person_responsible,
                connector.client,
            )  # fmt: skip
        )
    # Admins can always give consent, so they always hear of it.
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
