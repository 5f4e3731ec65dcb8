"""The Smart Connector form: fields, choices read from the database, and the checks.

Every error message names the rejected value and the fix, because the admin
filling in the form cannot see the database. Select values are ids as
strings and are resolved into rows while the form validates, so a tampered or
outdated id gets a field error instead of a server error.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from wtforms import (
    BooleanField,
    Field,
    IntegerField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
)
from wtforms.validators import DataRequired, Length, StopValidation, ValidationError

from intake.schedule import next_run_after
from mailauth import Provider, SecretBox
from models import (
    Aggregation,
    AuthMethod,
    BudgetCode,
    Client,
    Connector,
    JobKind,
    Language,
    MailAccount,
    Service,
    Specialization,
    TokenStatus,
    User,
)

JOB_KIND_CHOICES = [
    SelectChoice(JobKind.PROJECT.value, "Project"),
    SelectChoice(JobKind.QUOTE.value, "Quote"),
]
AGGREGATION_CHOICES = [
    SelectChoice(Aggregation.SEPARATELY.value, "Process every top level file separately"),
    SelectChoice(Aggregation.BATCH.value, "Process files in batches"),
]
FILES_LOCATION_EMAIL = "email"
FILES_LOCATION_CHOICES = [SelectChoice(FILES_LOCATION_EMAIL, "E-mail")]
AUTH_METHOD_CHOICES = [
    SelectChoice(AuthMethod.OAUTH2.value, "OAuth2"),
    SelectChoice(AuthMethod.PASSWORD.value, "Password"),
]

MIN_PORT, MAX_PORT = 1, 65535
MIN_INTERVAL_MINUTES, MAX_INTERVAL_MINUTES = 1, 10080  # 10080 minutes is one week

# A DNS name of letters, digits, dots and hyphens. IP addresses are checked with ipaddress.
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def strip_text(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class WholeNumberField(IntegerField):
    """An integer input whose parse error names the typed text.

    ``invalid_message`` is formatted with ``value``. An empty input gives
    ``None``, so the field's own validator can report the missing value.
    """

    def __init__(self, *args: Any, invalid_message: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invalid_message = invalid_message

    def process_formdata(self, valuelist: list[Any]) -> None:
        if not valuelist or not str(valuelist[0]).strip():
            self.data = None
            return
        raw = str(valuelist[0]).strip()
        try:
            self.data = int(raw)
        except ValueError:
            self.data = None
            raise ValueError(self.invalid_message.format(value=raw)) from None


@dataclass
class FormContext:
    """The database session, the configured OAuth2 providers and the connector being edited."""

    session: Session
    providers: dict[str, Provider]
    connector: Connector | None = None


@dataclass
class ResolvedRows:
    """Rows named by the submitted ids, filled in while the form validates."""

    client: Client | None = None
    person_responsible: User | None = None
    source_language: Language | None = None
    target_languages: list[Language] = field(default_factory=list)
    service: Service | None = None
    specialization: Specialization | None = None
    account: MailAccount | None = None


class ConnectorForm(FlaskForm):
    job_kind = RadioField(
        "Project or Quote",
        choices=JOB_KIND_CHOICES,
        default=JobKind.PROJECT.value,
        validate_choice=False,
    )
    name = StringField(
        "Name",
        filters=[strip_text],
        validators=[
            DataRequired("Name is missing; enter a name for this Smart Connector."),
            Length(
                max=200,
                message="Name has %(length)d characters; shorten it to at most %(max)d.",
            ),
        ],
    )
    active = BooleanField(
        "Active", default=True, description="Only active connectors scan on their schedule."
    )
    client = SelectField("Client", validate_choice=False)
    # The template renders a select of all clients' codes; a plain string field
    # lets a code of another client get a message that names it.
    budget_code = StringField("Budget Code", filters=[strip_text])
    aggregation = RadioField(
        "Files Aggregation",
        choices=AGGREGATION_CHOICES,
        default=Aggregation.SEPARATELY.value,
        validate_choice=False,
    )

    files_location = SelectField(
        "Files location",
        choices=FILES_LOCATION_CHOICES,
        default=FILES_LOCATION_EMAIL,
        validate_choice=False,
    )
    auth_method = RadioField(
        "Authorization method",
        choices=AUTH_METHOD_CHOICES,
        default=AuthMethod.OAUTH2.value,
        validate_choice=False,
    )
    provider = SelectField(
        "Provider",
        validate_choice=False,
        description="Only for OAuth2: the provider that hosts the mailbox.",
    )
    host = StringField(
        "Host Name",
        filters=[strip_text],
        description="The IMAP server, e.g. imap.example.com.",
    )
    port = WholeNumberField(
        "Port",
        default=993,
        invalid_message='Port "{value}" is not a number; enter a port from 1 to 65535.',
        description="Usually 993 with Use SSL, 143 without.",
    )
    use_ssl = BooleanField(
        "Use SSL",
        default=True,
        description=(
            "Checked: TLS from the first byte (implicit TLS, usually port 993). "
            "Unchecked: the connection starts in plain text and is upgraded with STARTTLS "
            "(usually port 143). STARTTLS is then required: Mailroom never logs in "
            "without TLS."
        ),
    )
    username = StringField(
        "Username",
        filters=[strip_text],
        description="The mailbox login; with OAuth2, the mailbox's e-mail address.",
    )
    password = PasswordField(
        "Password",
        description="Only for the Password method. Stored encrypted and never shown again.",
    )
    folder = StringField(
        "Folder",
        default="INBOX",
        filters=[strip_text, lambda value: value or "INBOX"],
        description="The IMAP folder to scan; sub-folders are written as the server "
        "separates them, e.g. INBOX/Orders.",
    )
    oauth_client_id = StringField(
        "Client Id",
        filters=[strip_text],
        description="Only for OAuth2: the Client Id of the app registered with the provider.",
    )
    oauth_client_secret = PasswordField(
        "Client Secret",
        filters=[strip_text],
        description="Only for OAuth2: the secret of that app registration. Stored encrypted "
        "and never shown again.",
    )

    person_responsible = SelectField("Person Responsible", validate_choice=False)
    source_language = SelectField("Source Language", validate_choice=False)
    target_languages = SelectMultipleField(
        "Target Languages",
        validate_choice=False,
        description="Hold Ctrl (or Cmd on a Mac) to choose several languages.",
    )
    service = SelectField("Service", validate_choice=False)
    specialization = SelectField("Specialization", validate_choice=False)
    interval_minutes = WholeNumberField(
        "Schedule",
        default=5,
        invalid_message='Schedule "{value}" is not a number; enter whole minutes from 1 to 10080.',
        description="Minutes between two scans of the folder, from 1 to 10080 (one week).",
    )

    save = SubmitField("Save")
    generate_token = SubmitField("Generate new token")

    def __init__(self, context: FormContext, **kwargs: Any) -> None:
        self.context = context
        self.rows = ResolvedRows()
        super().__init__(**kwargs)
        self._load_choices()

    # Choices ----------------------------------------------------------------

    def _load_choices(self) -> None:
        session = self.context.session
        clients = session.execute(sa.select(Client.id, Client.name).order_by(Client.name)).all()
        self.client.choices = [SelectChoice("", "Choose a client")] + [
            SelectChoice(str(client_id), name) for client_id, name in clients
        ]

        providers = sorted(self.context.providers.values(), key=lambda p: p.label.lower())
        self.provider.choices = [SelectChoice("", "Choose a provider")] + [
            SelectChoice(p.key, p.label) for p in providers
        ]

        users = session.execute(sa.select(User.id, User.name, User.email).order_by(User.name)).all()
        self.person_responsible.choices = [SelectChoice("", "Nobody")] + [
            SelectChoice(str(user_id), f"{name} ({email})") for user_id, name, email in users
        ]

        languages = [
            SelectChoice(str(row.id), str(row))
            for row in session.scalars(sa.select(Language).order_by(Language.name))
        ]
        self.source_language.choices = [SelectChoice("", "Not set")] + languages
        self.target_languages.choices = languages

        self.service.choices = [SelectChoice("", "Not set")] + [
            SelectChoice(str(service_id), name)
            for service_id, name in session.execute(
                sa.select(Service.id, Service.name).order_by(Service.name)
            )
        ]
        self.specialization.choices = [SelectChoice("", "Not set")] + [
            SelectChoice(str(specialization_id), name)
            for specialization_id, name in session.execute(
                sa.select(Specialization.id, Specialization.name).order_by(Specialization.name)
            )
        ]

    def budget_code_groups(self) -> list[tuple[int, str, list[str]]]:
        """Return (client id, client name, codes) of every client that has codes.

        Without JavaScript the select shows all groups, so a code can be chosen
        for any client. The script narrows the select to the chosen client.
        """
        # NOTE: the page lists every client and code. That suits hundreds of
        # clients, but thousands would need the search API alone.
        groups: dict[int, tuple[str, list[str]]] = {}
        rows = self.context.session.execute(
            sa.select(Client.id, Client.name, BudgetCode.code)
            .join(Client.budget_codes)
            .order_by(Client.name, BudgetCode.code)
        )
        for client_id, client_name, code in rows:
            groups.setdefault(client_id, (client_name, []))[1].append(code)
        return [(client_id, name, codes) for client_id, (name, codes) in groups.items()]

    def selected_budget_group(self, groups: list[tuple[int, str, list[str]]]) -> int | None:
        """Return the client id of the group whose option shows the current budget code.

        A code can occur under several clients, so the chosen client's group wins.
        None means that no group contains the code.
        """
        code = self.budget_code.data
        if not code:
            return None
        holders = [client_id for client_id, _name, codes in groups if code in codes]
        chosen = str(self.client.data or "")
        for client_id in holders:
            if str(client_id) == chosen:
                return client_id
        return holders[0] if holders else None

    @property
    def password_is_saved(self) -> bool:
        connector = self.context.connector
        return connector is not None and connector.password_encrypted is not None

    # Field checks -------------------------------------------------------------

    def validate_job_kind(self, field: RadioField) -> None:
        _require_choice(field, JOB_KIND_CHOICES)

    def validate_aggregation(self, field: RadioField) -> None:
        _require_choice(field, AGGREGATION_CHOICES)

    def validate_files_location(self, field: SelectField) -> None:
        _require_choice(field, FILES_LOCATION_CHOICES)

    def validate_auth_method(self, field: RadioField) -> None:
        _require_choice(field, AUTH_METHOD_CHOICES)

    def validate_name(self, field: StringField) -> None:
        query = sa.select(Connector.id).where(Connector.name == field.data)
        if self.context.connector is not None:
            query = query.where(Connector.id != self.context.connector.id)
        if self.context.session.scalars(query).first() is not None:
            raise ValidationError(duplicate_name_message(field.data))

    def validate_client(self, field: SelectField) -> None:
        if not field.data:
            raise ValidationError("Client is missing; choose the client the jobs are for.")
        self.rows.client = self._row(Client, field, "a client")

    def validate_host(self, field: StringField) -> None:
        host = field.data or ""
        if not host:
            raise ValidationError(
                "Host Name is missing; enter the IMAP server name, e.g. imap.example.com."
            )
        if not _is_host(host):
            raise ValidationError(
                f'Host Name "{host}" is not a server name; enter only the name or IP address, '
                'e.g. imap.example.com, without "imaps://", a path or a port.'
            )

    def validate_port(self, field: WholeNumberField) -> None:
        if field.process_errors:
            raise StopValidation()
        if field.data is None:
            raise ValidationError("Port is missing; enter a port from 1 to 65535, usually 993.")
        if not MIN_PORT <= field.data <= MAX_PORT:
            raise ValidationError(
                f"Port {field.data} is out of range; enter a port from 1 to 65535 "
                "(993 with Use SSL, 143 without)."
            )

    def validate_username(self, field: StringField) -> None:
        if not field.data:
            raise ValidationError(
                "Username is missing; enter the mailbox login, usually its e-mail address."
            )
        if len(field.data) > 254:
            raise ValidationError(
                f"Username has {len(field.data)} characters; shorten it to at most 254."
            )

    def validate_folder(self, field: StringField) -> None:
        if len(field.data) > 255 or _CONTROL_CHARACTERS.search(field.data):
            raise ValidationError(
                f'Folder "{field.data[:80]}" is not a valid folder name; use at most 255 '
                "characters without line breaks, e.g. INBOX."
            )

    def validate_oauth_client_id(self, field: StringField) -> None:
        if field.data and len(field.data) > 512:
            raise ValidationError(
                f"Client Id has {len(field.data)} characters; shorten it to at most 512."
            )

    def validate_person_responsible(self, field: SelectField) -> None:
        self.rows.person_responsible = self._row(User, field, "a user")

    def validate_source_language(self, field: SelectField) -> None:
        self.rows.source_language = self._row(Language, field, "a language")

    def validate_target_languages(self, field: SelectMultipleField) -> None:
        languages = []
        for raw in field.data or []:
            language = _get_by_id(self.context.session, Language, raw)
            if language is None:
                raise ValidationError(
                    f'Target language "{raw}" does not exist; choose languages from the list.'
                )
            languages.append(language)
        self.rows.target_languages = languages

    def validate_service(self, field: SelectField) -> None:
        self.rows.service = self._row(Service, field, "a service")

    def validate_specialization(self, field: SelectField) -> None:
        self.rows.specialization = self._row(Specialization, field, "a specialization")

    def validate_interval_minutes(self, field: WholeNumberField) -> None:
        if field.process_errors:
            raise StopValidation()
        if field.data is None:
            raise ValidationError("Schedule is missing; enter whole minutes from 1 to 10080.")
        if not MIN_INTERVAL_MINUTES <= field.data <= MAX_INTERVAL_MINUTES:
            raise ValidationError(
                f"Schedule {field.data} minutes is out of range; enter 1 to 10080 minutes "
                "(10080 minutes is one week)."
            )

    def _row(self, model: Any, field: SelectField, choice_name: str) -> Any:
        """Return the row that the select names, or None when it is empty.

        Raises ValidationError when the row does not exist.
        """
        if not field.data:
            return None
        row = _get_by_id(self.context.session, model, field.data)
        if row is None:
            raise ValidationError(
                f'{field.label.text} "{field.data}" does not exist; '
                f"choose {choice_name} from the list."
            )
        return row

    # Checks across fields -----------------------------------------------------

    def validate(self, extra_validators: Any = None) -> bool:
        """Run the field checks, then the checks that combine several fields."""
        super().validate(extra_validators)
        self._check_budget_code()
        self._check_languages()
        if self.auth_method.data == AuthMethod.OAUTH2.value:
            self._check_oauth2()
        elif self.auth_method.data == AuthMethod.PASSWORD.value:
            self._check_password()
        return not self.errors

    def _check_budget_code(self) -> None:
        code = self.budget_code.data
        client = self.rows.client
        if not code or client is None:
            return
        codes = [row.code for row in client.budget_codes]
        if code in codes:
            return
        if codes:
            fix = f"choose one of {', '.join(codes)} or leave it empty."
        else:
            fix = f"{client.name} has no budget codes, so leave it empty."
        _add_error(self.budget_code, f'Budget code "{code}" is not a code of {client.name}; {fix}')

    def _check_languages(self) -> None:
        source = self.rows.source_language
        if source is not None and source in self.rows.target_languages:
            _add_error(
                self.target_languages,
                f"Target Languages include the source language {source}; remove it.",
            )

    def _check_password(self) -> None:
        if self.generate_token.data:
            _add_error(
                self.auth_method,
                "Generate new token works only with the OAuth2 authorization method; "
                "choose OAuth2, or click Save to keep Password.",
            )
        if not self.password.data and not self.password_is_saved:
            _add_error(self.password, "Password is missing; enter the mailbox password.")

    def _check_oauth2(self) -> None:
        provider = self._check_provider()
        username = self.username.data or ""
        if username and "@" not in username:
            _add_error(
                self.username,
                f'Username "{username}" is not an e-mail address; OAuth2 needs the '
                "mailbox's address, e.g. intake@example.com.",
            )
            return
        if provider is None or not username:
            return
        account = find_account(self.context.session, provider.key, username)
        self.rows.account = account
        token_active = account is not None and account.token_status == TokenStatus.ACTIVE
        has_client_id = bool(self.oauth_client_id.data) or bool(account and account.client_id)
        has_secret = bool(self.oauth_client_secret.data) or bool(
            account and account.client_secret_encrypted
        )
        if not has_client_id and (self.generate_token.data or not token_active):
            _add_error(
                self.oauth_client_id,
                "Client Id is missing; enter the Client Id of the app registered with "
                f"{provider.label}, which a token needs.",
            )
        if not has_secret and not token_active:
            _add_error(
                self.oauth_client_secret,
                "Client Secret is missing; enter the Client Secret of the app registered "
                f"with {provider.label}.",
            )

    def _check_provider(self) -> Provider | None:
        key = self.provider.data or ""
        providers = self.context.providers
        labels = ", ".join(sorted(p.label for p in providers.values()))
        if not key:
            _add_error(self.provider, f"Provider is missing; OAuth2 needs one of: {labels}.")
            return None
        if key not in providers:
            _add_error(
                self.provider,
                f'Provider "{key}" is not configured; choose one of: {labels}, '
                "or add it to OAUTH_PROVIDERS.",
            )
            return None
        return providers[key]


def duplicate_name_message(name: str) -> str:
    return f'Name "{name}" is already used by another Smart Connector; choose another name.'


def find_account(session: Session, provider: str, username: str) -> MailAccount | None:
    """Return the mail account of this provider and address, compared in lower case."""
    return session.scalars(
        sa.select(MailAccount).where(
            MailAccount.provider == provider, MailAccount.email == username.lower()
        )
    ).one_or_none()


def initial_data(connector: Connector | None) -> dict[str, Any]:
    """Return the form values of ``connector``, or none for a new one so that defaults apply.

    Secrets are left out because the password fields are write-only.
    """
    if connector is None:
        return {}
    account = connector.mail_account
    return {
        "job_kind": connector.job_kind.value,
        "name": connector.name,
        "active": connector.active,
        "client": str(connector.client_id),
        "budget_code": connector.budget_code or "",
        "aggregation": connector.aggregation.value,
        "files_location": FILES_LOCATION_EMAIL,
        "auth_method": connector.auth_method.value,
        "provider": account.provider if account else "",
        "host": connector.host,
        "port": connector.port,
        "use_ssl": connector.use_ssl,
        "username": connector.username,
        "folder": connector.folder,
        "oauth_client_id": account.client_id if account and account.client_id else "",
        "person_responsible": _id_text(connector.person_responsible_id),
        "source_language": _id_text(connector.source_language_id),
        "target_languages": [str(language.id) for language in connector.target_languages],
        "service": _id_text(connector.service_id),
        "specialization": _id_text(connector.specialization_id),
        "interval_minutes": connector.interval_minutes,
    }


def apply_form(
    form: ConnectorForm, connector: Connector | None, box: SecretBox, now: datetime
) -> Connector:
    """Copy the validated form into ``connector``, or a new one, and return it.

    A new connector is added to the session. The caller commits.
    """
    rows = form.rows
    port = form.port.data
    interval = form.interval_minutes.data
    if rows.client is None or port is None or interval is None:
        raise ValueError("apply_form needs a form that passed validate()")
    creating = connector is None
    if connector is None:
        connector = Connector()
        form.context.session.add(connector)
    old_interval = connector.interval_minutes

    connector.job_kind = JobKind(form.job_kind.data)
    connector.name = form.name.data
    connector.active = form.active.data
    connector.client = rows.client
    connector.budget_code = form.budget_code.data or None
    connector.aggregation = Aggregation(form.aggregation.data)
    connector.auth_method = AuthMethod(form.auth_method.data)
    connector.host = form.host.data
    connector.port = port
    connector.use_ssl = form.use_ssl.data
    connector.username = form.username.data
    connector.folder = form.folder.data or "INBOX"
    connector.person_responsible = rows.person_responsible
    connector.source_language = rows.source_language
    connector.target_languages = rows.target_languages
    connector.service = rows.service
    connector.specialization = rows.specialization
    connector.interval_minutes = interval

    if connector.auth_method == AuthMethod.OAUTH2:
        connector.mail_account = _save_account(form, box)
        # The mailbox now logs in with a token, so a stored password would only linger.
        connector.password_encrypted = None
    else:
        connector.mail_account = None
        if form.password.data:
            connector.password_encrypted = box.encrypt(form.password.data)

    _schedule(connector, creating, old_interval, now)
    return connector


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


def _schedule(connector: Connector, creating: bool, old_interval: int, now: datetime) -> None:
    """Make a new connector due at once. After an interval change, count from the last run."""
    if creating or connector.next_run_at is None:
        connector.next_run_at = now
        return
    if connector.interval_minutes != old_interval:
        base = connector.last_run_at or now
        connector.next_run_at = max(now, next_run_after(connector.interval_minutes, base))


def _require_choice(field: Field, choices: list[SelectChoice]) -> None:
    labels = " or ".join(choice.label for choice in choices)
    if not field.data:
        raise ValidationError(f"{field.label.text} is missing; choose {labels}.")
    if field.data not in {choice.value for choice in choices}:
        raise ValidationError(f'{field.label.text} "{field.data}" is not valid; choose {labels}.')


def _add_error(field: Field, message: str) -> None:
    # Field.errors is a tuple until the field was validated, a list afterwards.
    field.errors = [*field.errors, message]


def _get_by_id(session: Session, model: Any, raw: str) -> Any:
    # Longer digit strings would overflow a 64-bit integer column.
    if not raw.isdigit() or len(raw) > 18:
        return None
    return session.get(model, int(raw))


def _id_text(value: int | None) -> str:
    return "" if value is None else str(value)


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST_NAME.match(host)) and ".." not in host
    return True
