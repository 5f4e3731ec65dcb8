"""Filling the Smart Connector form from a connector, and saving the form into one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from intake.failures import DEFAULT_MAX_ATTEMPTS
from mailauth import SecretBox
from models import (
    AfterProcessing,
    Aggregation,
    AuthMethod,
    Connector,
    JobKind,
    MailAccount,
    SourceLocation,
    StoreRole,
    TokenStatus,
)

from .connector_fields import id_text
from .connector_forms import STANDARD_PORTS, ConnectorForm
from .connector_notifications import notification_initial_data
from .connector_robotcode import robot_code_text
from .connector_schedule import (
    DEFAULT_INTERVAL_MINUTES,
    SavedSchedule,
    planned_next_run,
    schedule_initial_data,
)
from .connector_stores import (
    apply_stores,
    copy_server_secrets,
    saved_stores,
    store_initial_data,
)


def initial_data(connector: Connector | None) -> dict[str, Any]:
    """Return the form values of ``connector``, or only the Robot Code for a new one.

    A new connector gets no other values, so the fields' defaults apply.
    Secrets are left out because the password fields are write-only.
    """
    text = robot_code_text(connector)
    if connector is None:
        return {"robot_code": text, "robot_code_base": text}
    account = connector.mail_account
    options = connector.options or {}
    session = Session.object_session(connector)
    stores = saved_stores(session, connector) if session is not None else {}
    email = connector.source_location == SourceLocation.EMAIL
    # Each kind of source fills only its own inputs; the others keep their defaults.
    mailbox: dict[str, Any] = {
        "host": connector.host,
        "port": connector.port,
        "use_ssl": connector.use_ssl,
        "username": connector.username,
        "folder": connector.folder,
    }
    location_source = {
        "host": connector.host,
        "port": connector.port if connector.source_location != SourceLocation.FOLDER else None,
        "username": connector.username,
        "known_host_key": connector.known_host_key or "",
        "ftp_tls": connector.ftp_tls,
        "path": connector.folder,
    }
    return {
        "job_kind": connector.job_kind.value,
        "name": connector.name,
        "active": connector.active,
        "client": str(connector.client_id),
        "budget_code": connector.budget_code or "",
        "aggregation": connector.aggregation.value,
        "files_location": connector.source_location.value,
        "auth_method": connector.auth_method.value,
        "provider": account.provider if account else "",
        **(mailbox if email else {}),
        "location_source": {} if email else location_source,
        "after_processing": connector.after_processing.value,
        "move_to_folder": connector.move_to_folder or "",
        "process_mail_after": connector.process_mail_after,
        "oauth_client_id": account.client_id if account and account.client_id else "",
        "person_responsible": id_text(connector.person_responsible_id),
        "source_language": id_text(connector.source_language_id),
        "target_languages": [str(language.id) for language in connector.target_languages],
        "service": id_text(connector.service_id),
        "specialization": id_text(connector.specialization_id),
        "include_inline_images": bool(options.get("include_inline_images")),
        "unpack_zip": bool(options.get("unpack_zip")),
        "max_attempts": options.get("max_attempts") or DEFAULT_MAX_ATTEMPTS,
        "quarantine_folder": connector.quarantine_folder or "",
        **schedule_initial_data(connector),
        **notification_initial_data(connector.notifications),
        "store_success": store_initial_data(stores.get(StoreRole.SUCCESS)),
        "store_error": store_initial_data(stores.get(StoreRole.ERROR)),
        "robot_code": text,
        "robot_code_base": text,
    }


def apply_form(
    form: ConnectorForm, connector: Connector | None, box: SecretBox, now: datetime
) -> Connector:
    """Copy the validated form into ``connector``, or a new one, and return it.

    A new connector is added to the session and flushed, because its store
    rows need its id. The caller commits.
    """
    rows = form.rows
    port = form.port.data if form.reads_email else 0
    max_attempts = form.max_attempts.data
    merge = form.robot_code_merge
    if rows.client is None or port is None or max_attempts is None or merge is None:
        raise ValueError("apply_form needs a form that passed validate()")
    session = form.context.session
    saved_schedule = SavedSchedule.of(connector)
    if connector is None:
        connector = Connector()
        session.add(connector)

    connector.job_kind = JobKind(form.job_kind.data)
    connector.name = form.name.data
    connector.active = form.active.data
    connector.client = rows.client
    connector.budget_code = form.budget_code.data or None
    connector.aggregation = Aggregation(form.aggregation.data)
    if form.reads_email:
        _apply_mailbox(form, connector, port, box)
    else:
        _apply_location_source(form, connector, box)
    connector.person_responsible = rows.person_responsible
    connector.source_language = rows.source_language
    connector.target_languages = rows.target_languages
    connector.service = rows.service
    connector.specialization = rows.specialization
    # New dicts, because SQLAlchemy does not see changes made inside a JSON value.
    connector.options = {
        **(connector.options or {}),
        "include_inline_images": bool(form.include_inline_images.data),
        "unpack_zip": bool(form.unpack_zip.data),
        "max_attempts": max_attempts,
    }
    connector.notifications = form.notifications_data(connector.notifications)
    connector.rules = dict(merge.rules)

    weekly = form.weekly_schedule_data()
    if weekly is None:
        interval = form.interval_minutes.data
        if interval is None:
            raise ValueError("apply_form needs a form that passed validate()")
        connector.interval_minutes = interval
    elif connector.interval_minutes is None:
        # A new connector with a weekly schedule keeps an interval for a later switch.
        connector.interval_minutes = DEFAULT_INTERVAL_MINUTES
    connector.weekly_schedule = weekly
    connector.next_run_at = planned_next_run(
        saved_schedule, connector.interval_minutes, weekly, now
    )

    session.flush()
    apply_stores(session, connector, form.store_sections(), form.saved_stores, box)
    return connector


def _apply_mailbox(form: ConnectorForm, connector: Connector, port: int, box: SecretBox) -> None:
    """Copy the e-mail source fields, and drop the server settings of a former location source."""
    if connector.source_location != SourceLocation.EMAIL:
        # A server password or key is no mailbox password.
        connector.password_encrypted = None
    connector.source_location = SourceLocation.EMAIL
    connector.private_key_encrypted = None
    connector.known_host_key = None
    connector.ftp_tls = False
    connector.auth_method = AuthMethod(form.auth_method.data)
    connector.host = form.host.data
    connector.port = port
    connector.use_ssl = form.use_ssl.data
    connector.username = form.username.data
    connector.folder = form.folder.data or "INBOX"
    connector.after_processing = AfterProcessing(form.after_processing.data)
    moving = connector.after_processing == AfterProcessing.MOVE
    connector.move_to_folder = form.move_to_folder.data if moving else None
    connector.quarantine_folder = form.quarantine_folder.data or None
    connector.process_mail_after = form.process_mail_after.data

    if connector.auth_method == AuthMethod.OAUTH2:
        connector.mail_account = _save_account(form, box)
        # The mailbox now logs in with a token, so a stored password would only linger.
        connector.password_encrypted = None
    else:
        connector.mail_account = None
        if form.password.data:
            connector.password_encrypted = box.encrypt(form.password.data)


def _apply_location_source(form: ConnectorForm, connector: Connector, box: SecretBox) -> None:
    """Copy the folder, FTP or SFTP source fields and clear the mailbox-only settings."""
    fields = form.location_source.form
    kind = SourceLocation(form.files_location.data)
    if connector.source_location == SourceLocation.EMAIL:
        # A mailbox password is no server password.
        connector.password_encrypted = None
    connector.source_location = kind
    connector.folder = fields.path.data
    connector.mail_account = None
    # A location source logs in with a password or key; the IMAP settings do not apply.
    connector.auth_method = AuthMethod.PASSWORD
    connector.use_ssl = False
    connector.after_processing = AfterProcessing.DELETE
    connector.move_to_folder = None
    connector.quarantine_folder = None
    connector.process_mail_after = None
    if kind == SourceLocation.FOLDER:
        # No server: port 0 reads as "no port" where the run builds its settings.
        connector.host = connector.username = ""
        connector.port = 0
        connector.password_encrypted = connector.private_key_encrypted = None
        connector.known_host_key = None
        connector.ftp_tls = False
        return
    connector.host = fields.host.data
    connector.port = fields.port.data or STANDARD_PORTS[kind.value]
    connector.username = fields.username.data
    copy_server_secrets(fields, connector, kind, box)


def _save_account(form: ConnectorForm, box: SecretBox) -> MailAccount:
    """Fetch or create the shared account and store the Client Id and the encrypted secret."""
    account = form.rows.account
    if account is None:
        account = MailAccount(provider=form.provider.data, email=form.username.data.lower())
        form.context.session.add(account)
    client_id = form.oauth_client_id.data
    if client_id and client_id != account.client_id:
        if account.client_id and account.token_status == TokenStatus.ACTIVE:
            # A refresh token is bound to the app registration that obtained it.
            account.token_status = TokenStatus.NEEDS_CONSENT
            account.token_status_reason = (
                "The Client Id changed; click Generate new token to give consent "
                "for the new app registration."
            )
        account.client_id = client_id
    if form.oauth_client_secret.data:
        account.client_secret_encrypted = box.encrypt(form.oauth_client_secret.data)
    return account
