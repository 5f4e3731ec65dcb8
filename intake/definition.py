"""A connector's definition as Robot Code data, for the form, export and import.

References are by name or ISO code, never by database id, so a definition
moves between installations. Secrets (passwords, client secrets, keys) are
never part of it. The document shape and its validation live in
``robotcode``; this module maps it to and from the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import (
    AfterProcessing,
    Aggregation,
    AuthMethod,
    Client,
    Connector,
    ConnectorStore,
    JobKind,
    Language,
    MailAccount,
    Service,
    SourceLocation,
    Specialization,
    StoreRole,
    User,
)
from robotcode import dump_robot_code, parse_robot_code


class DefinitionError(ValueError):
    """The definition names something that does not exist; the message says what."""


def _drop_empty(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in (None, "", [], {})}


def _store(connector: Connector, role: StoreRole) -> dict[str, Any] | None:
    row = next((store for store in connector_stores(connector) if store.role == role), None)
    if row is None:
        return None
    return _drop_empty(
        {
            "location": row.location.value,
            "path": row.path or None,
            "host": row.host,
            "port": row.port,
            "username": row.username,
            "ftp_tls": True if row.location == SourceLocation.FTP and row.ftp_tls else None,
            "known_host_key": row.known_host_key if row.location == SourceLocation.SFTP else None,
        }
    )


def connector_stores(connector: Connector) -> list[ConnectorStore]:
    session = Session.object_session(connector)
    if session is None or connector.id is None:
        return []
    return list(
        session.scalars(
            sa.select(ConnectorStore).where(ConnectorStore.connector_id == connector.id)
        )
    )


def export_connector(connector: Connector) -> dict[str, Any]:
    """Return the connector as Robot Code data (see ``robotcode.ROBOT_CODE_SCHEMA``)."""
    email = connector.source_location == SourceLocation.EMAIL
    source = _drop_empty(
        {
            "location": connector.source_location.value,
            "authorization": connector.auth_method.value if email else None,
            "provider": connector.mail_account.provider
            if email and connector.auth_method == AuthMethod.OAUTH2 and connector.mail_account
            else None,
            "host": connector.host or None,
            # A folder under the file store has no server, so its unused port stays out.
            "port": connector.port if connector.source_location != SourceLocation.FOLDER else None,
            "use_ssl": connector.use_ssl if email else None,
            "username": connector.username or None,
            "folder": connector.folder,
            "after_processing": connector.after_processing.value if email else None,
            "move_to": connector.move_to_folder
            if connector.after_processing == AfterProcessing.MOVE
            else None,
            "quarantine_folder": connector.quarantine_folder if email else None,
            "process_mail_after": connector.process_mail_after.isoformat()
            if connector.process_mail_after
            else None,
            "ftp_tls": True
            if connector.source_location == SourceLocation.FTP and connector.ftp_tls
            else None,
            "known_host_key": connector.known_host_key
            if connector.source_location == SourceLocation.SFTP
            else None,
        }
    )
    if connector.weekly_schedule:
        schedule = dict(connector.weekly_schedule)
    else:
        schedule = {"every_minutes": connector.interval_minutes}
    data = {
        "name": connector.name,
        "type": connector.job_kind.value,
        "active": connector.active,
        "client": connector.client.name,
        "budget_code": connector.budget_code,
        "person_responsible": connector.person_responsible.email
        if connector.person_responsible
        else None,
        "source_language": connector.source_language.code if connector.source_language else None,
        "target_languages": sorted(language.code for language in connector.target_languages),
        "service": connector.service.name if connector.service else None,
        "specialization": connector.specialization.name if connector.specialization else None,
        "files_aggregation": connector.aggregation.value,
        "source": source,
        "store_on_success": _store(connector, StoreRole.SUCCESS),
        "store_on_error": _store(connector, StoreRole.ERROR),
        "schedule": schedule,
        "notifications": connector.notifications or None,
        "rules": connector.rules or None,
        "options": connector.options or None,
    }
    return _drop_empty(data)


def _lookup(session: Session, model: Any, column: Any, value: Any, field: str) -> Any:
    if value is None:
        return None
    row = session.scalars(sa.select(model).where(column == value)).one_or_none()
    if row is None:
        raise DefinitionError(f"{field}: {value!r} does not exist; create it first or fix the name")
    return row


def apply_definition(
    session: Session, data: dict[str, Any], connector: Connector | None = None
) -> Connector:
    """Create or update a connector from Robot Code data; the caller commits.

    ``data`` is validated against the schema first, so a dict built in code
    gets the same checks as a text typed into the Robot Code field.
    """
    data = parse_robot_code(dump_robot_code(data))
    connector = connector or Connector()
    connector.name = str(data["name"])
    connector.job_kind = JobKind(data.get("type", "project"))
    connector.active = bool(data.get("active", True))
    connector.client = _lookup(session, Client, Client.name, data["client"], "client")
    budget_code = data.get("budget_code")
    if budget_code and budget_code not in {code.code for code in connector.client.budget_codes}:
        raise DefinitionError(
            f"budget_code: {budget_code!r} is not a budget code of {connector.client.name}"
        )
    connector.budget_code = budget_code
    connector.aggregation = Aggregation(data.get("files_aggregation", "separately"))

    source = data.get("source") or {"location": "email"}
    connector.source_location = SourceLocation(source["location"])
    reads_email = connector.source_location == SourceLocation.EMAIL
    # A folder, FTP or SFTP source logs in with a password or key, never OAuth2.
    connector.auth_method = AuthMethod(
        source.get("authorization", "oauth2" if reads_email else "password")
    )
    connector.host = str(source.get("host") or "")
    connector.port = int(source.get("port") or _default_port(connector.source_location, source))
    connector.use_ssl = bool(source.get("use_ssl", True))
    connector.username = str(source.get("username") or "")
    connector.folder = str(source.get("folder") or "INBOX")
    connector.after_processing = AfterProcessing(source.get("after_processing", "delete"))
    connector.move_to_folder = source.get("move_to")
    connector.quarantine_folder = source.get("quarantine_folder")
    connector.ftp_tls = bool(source.get("ftp_tls", False))
    connector.known_host_key = source.get("known_host_key")
    _check_quarantine_folder(connector)
    after = source.get("process_mail_after")
    connector.process_mail_after = datetime.fromisoformat(after) if after else None
    if (
        connector.source_location == SourceLocation.EMAIL
        and connector.auth_method == AuthMethod.OAUTH2
    ):
        provider = source["provider"]
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
    connector.target_languages = [
        _lookup(session, Language, Language.code, code, "target_languages")
        for code in data.get("target_languages") or []
    ]
    connector.service = _lookup(session, Service, Service.name, data.get("service"), "service")
    connector.specialization = _lookup(
        session, Specialization, Specialization.name, data.get("specialization"), "specialization"
    )

    schedule = data.get("schedule") or {"every_minutes": 5}
    if "every_minutes" in schedule:
        connector.interval_minutes = int(schedule["every_minutes"])
        connector.weekly_schedule = None
    else:
        connector.weekly_schedule = dict(schedule)
    connector.notifications = dict(data.get("notifications") or {})
    connector.rules = dict(data.get("rules") or {})
    connector.options = dict(data.get("options") or {})
    _apply_stores(session, connector, data)
    return connector


def _default_port(location: SourceLocation, source: dict[str, Any]) -> int:
    if location == SourceLocation.FTP:
        return 21
    if location == SourceLocation.SFTP:
        return 22
    return 993 if source.get("use_ssl", True) else 143


def _check_quarantine_folder(connector: Connector) -> None:
    """Reject a move or quarantine folder name with an empty level, or a reused folder."""
    move_to = connector.move_to_folder
    if move_to is not None and (problem := folder_name_problem(move_to)):
        raise DefinitionError(
            f"source.move_to: {move_to!r} {problem}; write the folder name as the server "
            "separates sub-folders, such as INBOX/Processed"
        )
    folder = connector.quarantine_folder
    if folder is None:
        return
    if problem := folder_name_problem(folder):
        raise DefinitionError(
            f"source.quarantine_folder: {folder!r} {problem}; write the folder name as the "
            "server separates sub-folders, such as Mailroom/Errors"
        )
    if same_folder(folder, connector.folder):
        raise DefinitionError(
            f"source.quarantine_folder: {folder!r} is the folder this connector scans; "
            "choose another folder, such as Mailroom/Errors"
        )
    moving = connector.after_processing == AfterProcessing.MOVE
    if moving and connector.move_to_folder and same_folder(folder, connector.move_to_folder):
        raise DefinitionError(
            f"source.quarantine_folder: {folder!r} is also source.move_to, where processed "
            "e-mails go; choose a separate folder, such as Mailroom/Errors"
        )


def folder_name_problem(folder: str) -> str | None:
    """Return what is wrong with the hierarchy separators of an IMAP folder name, or None.

    Servers such as Dovecot reject a name with an empty level, which "//" or a
    "/" at either end makes.
    """
    if "//" in folder:
        return 'contains "//", an empty folder level'
    if folder.startswith("/") or folder.endswith("/"):
        return 'starts or ends with "/", which leaves an empty folder level'
    return None


def same_folder(first: str, second: str) -> bool:
    """Compare IMAP folder names, where INBOX is the same name in any case (RFC 3501)."""
    if first.upper() == "INBOX" and second.upper() == "INBOX":
        return True
    return first == second


def _apply_stores(session: Session, connector: Connector, data: dict[str, Any]) -> None:
    """Set the store rows' locations; secrets stay as they are (the form sets them)."""
    existing = {store.role: store for store in connector_stores(connector)}
    for role, key in ((StoreRole.SUCCESS, "store_on_success"), (StoreRole.ERROR, "store_on_error")):
        values = data.get(key)
        row = existing.get(role)
        if not values or values.get("location") == "none":
            if row is not None:
                session.delete(row)
            continue
        if row is None:
            row = ConnectorStore(role=role)
            if connector.id is None:
                session.add(connector)
                session.flush()
            row.connector_id = connector.id
            session.add(row)
        row.location = SourceLocation(values["location"])
        row.path = values.get("path") or ""
        row.host = values.get("host")
        row.port = values.get("port")
        row.username = values.get("username")
        row.ftp_tls = bool(values.get("ftp_tls", False))
        row.known_host_key = values.get("known_host_key")
