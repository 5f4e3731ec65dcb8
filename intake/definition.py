"""A connector's definition as plain data, for export, import and scripting.

References are by name or ISO code, never by database id, so a definition
moves between installations. Secrets are never exported.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import (
    Aggregation,
    AuthMethod,
    Client,
    Connector,
    JobKind,
    Language,
    MailAccount,
    Service,
    Specialization,
    User,
)


class DefinitionError(ValueError):
    """The definition is invalid; the message names the field and the fix."""


FIELDS = {
    "name", "type", "active", "client", "budget_code", "files_aggregation", "mailbox",
    "person_responsible", "source_language", "target_languages", "service",
    "specialization", "schedule",
}  # fmt: skip
MAILBOX_FIELDS = {"authorization", "provider", "host", "port", "use_ssl", "username", "folder"}


def export_connector(connector: Connector) -> dict[str, Any]:
    return {
        "name": connector.name,
        "type": connector.job_kind.value,
        "active": connector.active,
        "client": connector.client.name,
        "budget_code": connector.budget_code,
        "files_aggregation": connector.aggregation.value,
        "mailbox": {
            "authorization": connector.auth_method.value,
            "provider": connector.mail_account.provider if connector.mail_account else None,
            "host": connector.host,
            "port": connector.port,
            "use_ssl": connector.use_ssl,
            "username": connector.username,
            "folder": connector.folder,
        },
        "person_responsible": connector.person_responsible.email
        if connector.person_responsible
        else None,
        "source_language": connector.source_language.code if connector.source_language else None,
        "target_languages": sorted(language.code for language in connector.target_languages),
        "service": connector.service.name if connector.service else None,
        "specialization": connector.specialization.name if connector.specialization else None,
        "schedule": {"every_minutes": connector.interval_minutes},
    }


def _lookup(session: Session, model: Any, column: Any, value: Any, field: str) -> Any:
    if value is None:
        return None
    row = session.scalars(sa.select(model).where(column == value)).one_or_none()
    if row is None:
        raise DefinitionError(f"{field}: {value!r} does not exist; create it first or fix the name")
    return row


def _choice(value: Any, kind: Any, field: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise DefinitionError(f"{field}: {value!r} is not one of {allowed}") from None


def apply_definition(
    session: Session, data: dict[str, Any], connector: Connector | None = None
) -> Connector:
    """Create or update a connector from ``data``; the caller commits."""
    if not isinstance(data, dict):
        raise DefinitionError("the definition must be a mapping of fields")
    unknown = set(data) - FIELDS
    if unknown:
        raise DefinitionError(f"unknown fields {sorted(unknown)}; allowed: {sorted(FIELDS)}")
    mailbox = data.get("mailbox") or {}
    if not isinstance(mailbox, dict):
        raise DefinitionError("mailbox must be a mapping")
    unknown = set(mailbox) - MAILBOX_FIELDS
    if unknown:
        raise DefinitionError(f"mailbox: unknown fields {sorted(unknown)}")
    for required in ("name", "client"):
        if not data.get(required):
            raise DefinitionError(f"{required} is required")
    for required in ("host", "username"):
        if not mailbox.get(required):
            raise DefinitionError(f"mailbox.{required} is required")

    connector = connector or Connector()
    connector.name = str(data["name"])
    connector.job_kind = _choice(data.get("type", "project"), JobKind, "type")
    connector.active = bool(data.get("active", True))
    connector.client = _lookup(session, Client, Client.name, data["client"], "client")
    budget_code = data.get("budget_code")
    if budget_code and budget_code not in {code.code for code in connector.client.budget_codes}:
        raise DefinitionError(
            f"budget_code: {budget_code!r} is not a budget code of {connector.client.name}"
        )
    connector.budget_code = budget_code
    connector.aggregation = _choice(
        data.get("files_aggregation", "separately"), Aggregation, "files_aggregation"
    )
    connector.auth_method = _choice(
        mailbox.get("authorization", "oauth2"), AuthMethod, "mailbox.authorization"
    )
    connector.host = str(mailbox["host"])
    port = mailbox.get("port", 993)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise DefinitionError(f"mailbox.port: {port!r} is not a port number (1-65535)")
    connector.port = port
    connector.use_ssl = bool(mailbox.get("use_ssl", True))
    connector.username = str(mailbox["username"])
    connector.folder = str(mailbox.get("folder") or "INBOX")
    if connector.auth_method == AuthMethod.OAUTH2:
        provider = mailbox.get("provider")
        if not provider:
            raise DefinitionError("mailbox.provider is required with authorization oauth2")
        email = connector.username.lower()
        account = session.scalars(
            sa.select(MailAccount).where(
                MailAccount.provider == provider, MailAccount.email == email
            )
        ).one_or_none()
        if account is None:
            account = MailAccount(provider=provider, email=email)
            session.add(account)
        connector.mail_account = account
    else:
        connector.mail_account = None

    connector.person_responsible = _lookup(
        session, User, User.email, data.get("person_responsible"), "person_responsible"
    )
    connector.source_language = _lookup(
        session, Language, Language.code, data.get("source_language"), "source_language"
    )
    targets = data.get("target_languages") or []
    if not isinstance(targets, list):
        raise DefinitionError("target_languages must be a list of language codes")
    connector.target_languages = [
        _lookup(session, Language, Language.code, code, "target_languages") for code in targets
    ]
    connector.service = _lookup(session, Service, Service.name, data.get("service"), "service")
    connector.specialization = _lookup(
        session, Specialization, Specialization.name, data.get("specialization"), "specialization"
    )
    schedule = data.get("schedule") or {}
    every = schedule.get("every_minutes", 5) if isinstance(schedule, dict) else None
    if not isinstance(every, int) or not 1 <= every <= 10080:
        raise DefinitionError(f"schedule.every_minutes: {every!r} must be 1 to 10080 minutes")
    connector.interval_minutes = every
    return connector
