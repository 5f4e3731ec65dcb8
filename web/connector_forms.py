"""The Smart Connector form: fields, choices read from the database, and the checks.

Every error message names the rejected value and the fix, because the admin
filling in the form cannot see the database. Select values are ids as
strings and are resolved into rows while the form validates, so a tampered or
outdated id gets a field error instead of a server error.

The Definition tab's fields live here. The Schedule, E-mail Notifications and
Robot Code tabs and the two store sections are mixins from the other
``connector_*`` modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from wtforms import (
    BooleanField,
    FormField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
)
from wtforms.validators import DataRequired, Length, StopValidation, ValidationError

from intake.definition import folder_name_problem, same_folder
from intake.failures import DEFAULT_MAX_ATTEMPTS
from mailauth import Provider
from models import (
    AfterProcessing,
    Aggregation,
    AuthMethod,
    BudgetCode,
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
    TokenStatus,
    User,
)

from .connector_fields import (
    CONTROL_CHARACTERS,
    UtcDateTimeField,
    WholeNumberField,
    add_error,
    get_by_id,
    is_host,
    require_choice,
    strip_text,
)
from .connector_notifications import NotificationFields
from .connector_robotcode import RobotCodeFields, RobotCodeMerge, merge_robot_code, source_errors
from .connector_schedule import ScheduleFields
from .connector_stores import LocationForm, StoreFields, check_location, check_store, saved_stores

JOB_KIND_CHOICES = [
    SelectChoice(JobKind.PROJECT.value, "Project"),
    SelectChoice(JobKind.QUOTE.value, "Quote"),
]
AGGREGATION_CHOICES = [
    SelectChoice(Aggregation.SEPARATELY.value, "Process every top level file separately"),
    SelectChoice(Aggregation.PER_EMAIL.value, "Process every e-mail separately"),
    SelectChoice(Aggregation.BATCH.value, "Process files in batches"),
]
FILES_LOCATION_EMAIL = "email"
FILES_LOCATION_CHOICES = [
    SelectChoice(FILES_LOCATION_EMAIL, "E-mail"),
    SelectChoice(SourceLocation.FOLDER.value, "Folder under the file store"),
    SelectChoice(SourceLocation.FTP.value, "FTP"),
    SelectChoice(SourceLocation.SFTP.value, "SFTP"),
]
# The port saved when a location source leaves Port empty.
STANDARD_PORTS = {SourceLocation.FTP.value: 21, SourceLocation.SFTP.value: 22}
AUTH_METHOD_CHOICES = [
    SelectChoice(AuthMethod.OAUTH2.value, "OAuth2"),
    SelectChoice(AuthMethod.PASSWORD.value, "Password"),
]
AFTER_PROCESSING_CHOICES = [
    SelectChoice(AfterProcessing.DELETE.value, "Delete"),
    SelectChoice(AfterProcessing.MOVE.value, "Move to folder"),
    SelectChoice(AfterProcessing.MARK_SEEN.value, "Leave it and mark it seen"),
]

MIN_PORT, MAX_PORT = 1, 65535
MIN_ATTEMPTS, MAX_ATTEMPTS = 1, 20


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


class ConnectorForm(ScheduleFields, NotificationFields, StoreFields, RobotCodeFields, FlaskForm):
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
        description="Where the connector looks for input files: a mailbox, a folder inside "
        "the file store's locations folder, or a folder on an FTP or SFTP server.",
    )
    # The server and path of a folder, FTP or SFTP source. The e-mail fields below
    # are separate inputs, so switching the location in the form loses no value.
    location_source = FormField(LocationForm, "Folder, FTP or SFTP server")
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
    after_processing = RadioField(
        "After processing an e-mail",
        choices=AFTER_PROCESSING_CHOICES,
        default=AfterProcessing.DELETE.value,
        validate_choice=False,
    )
    move_to_folder = StringField(
        "Move to folder",
        filters=[strip_text],
        description="Only for Move to folder: an existing IMAP folder, e.g. INBOX/Processed.",
    )
    process_mail_after = UtcDateTimeField(
        "Process only mail received after",
        invalid_message='Process only mail received after "{value}" is not a date and time; '
        "enter it as 2026-12-01 08:00.",
        description="Optional, in UTC. E-mails that arrived in the folder earlier are left "
        "alone, so a new connector does not turn an old backlog into jobs.",
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

    include_inline_images = BooleanField(
        "Include inline images",
        description="Also turn images shown in the e-mail text, such as logos, into files.",
    )
    unpack_zip = BooleanField(
        "Unpack ZIP archives",
        description="Process the files inside attached ZIP archives instead of the archives.",
    )
    max_attempts = WholeNumberField(
        "Attempts before quarantine",
        default=DEFAULT_MAX_ATTEMPTS,
        invalid_message='Attempts before quarantine "{value}" is not a number; enter a whole '
        "number from 1 to 20.",
        description="Runs that may fail on one e-mail before it is quarantined: later runs "
        "skip it until someone clicks Process again on the connector page. From 1 to 20.",
    )
    quarantine_folder = StringField(
        "Quarantine folder",
        filters=[strip_text],
        description="Optional. The IMAP folder that a quarantined e-mail is moved to, "
        "e.g. Mailroom/Errors; Mailroom creates it if it is missing. Sub-folders are "
        "written as the server separates them. Empty: quarantined e-mails stay in the "
        "folder this connector scans.",
    )

    save = SubmitField("Save")
    generate_token = SubmitField("Generate new token")

    def __init__(self, context: FormContext, **kwargs: Any) -> None:
        self.context = context
        self.rows = ResolvedRows()
        self.saved_stores: dict[StoreRole, ConnectorStore] = saved_stores(
            context.session, context.connector
        )
        self.robot_code_merge: RobotCodeMerge | None = None
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
    def reads_email(self) -> bool:
        """Return whether the chosen Files location is a mailbox, which the e-mail fields need."""
        return self.files_location.data == FILES_LOCATION_EMAIL

    @property
    def password_is_saved(self) -> bool:
        connector = self.context.connector
        return (
            connector is not None
            and connector.source_location == SourceLocation.EMAIL
            and connector.password_encrypted is not None
        )

    @property
    def location_password_is_saved(self) -> bool:
        """Return whether a folder, FTP or SFTP source has a saved server password."""
        connector = self.context.connector
        return (
            connector is not None
            and connector.source_location in (SourceLocation.FTP, SourceLocation.SFTP)
            and connector.password_encrypted is not None
        )

    @property
    def location_private_key_is_saved(self) -> bool:
        connector = self.context.connector
        return (
            connector is not None
            and connector.source_location == SourceLocation.SFTP
            and connector.private_key_encrypted is not None
        )

    # Field checks -------------------------------------------------------------

    def validate_job_kind(self, field: RadioField) -> None:
        require_choice(field, JOB_KIND_CHOICES)

    def validate_aggregation(self, field: RadioField) -> None:
        require_choice(field, AGGREGATION_CHOICES)

    def validate_files_location(self, field: SelectField) -> None:
        require_choice(field, FILES_LOCATION_CHOICES)

    def validate_auth_method(self, field: RadioField) -> None:
        if self.reads_email:
            require_choice(field, AUTH_METHOD_CHOICES)

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
        if not self.reads_email:
            return
        host = field.data or ""
        if not host:
            raise ValidationError(
                "Host Name is missing; enter the IMAP server name, e.g. imap.example.com."
            )
        if not is_host(host):
            raise ValidationError(
                f'Host Name "{host}" is not a server name; enter only the name or IP address, '
                'e.g. imap.example.com, without "imaps://", a path or a port.'
            )

    def validate_port(self, field: WholeNumberField) -> None:
        if not self.reads_email:
            # A location source has its own Port, so this one is neither checked nor saved.
            field.errors = []
            raise StopValidation()
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
        if not self.reads_email:
            return
        if not field.data:
            raise ValidationError(
                "Username is missing; enter the mailbox login, usually its e-mail address."
            )
        if len(field.data) > 254:
            raise ValidationError(
                f"Username has {len(field.data)} characters; shorten it to at most 254."
            )

    def validate_folder(self, field: StringField) -> None:
        if not self.reads_email:
            return
        if len(field.data) > 255 or CONTROL_CHARACTERS.search(field.data):
            raise ValidationError(
                f'Folder "{field.data[:80]}" is not a valid folder name; use at most 255 '
                "characters without line breaks, e.g. INBOX."
            )

    def validate_after_processing(self, field: RadioField) -> None:
        if self.reads_email:
            require_choice(field, AFTER_PROCESSING_CHOICES)

    def validate_move_to_folder(self, field: StringField) -> None:
        if not self.reads_email or self.after_processing.data != AfterProcessing.MOVE.value:
            return
        folder = field.data or ""
        if not folder:
            raise ValidationError(
                "Move to folder is missing; enter the IMAP folder for processed e-mails, "
                "e.g. INBOX/Processed, or choose another action."
            )
        if len(folder) > 255 or CONTROL_CHARACTERS.search(folder):
            raise ValidationError(
                f'Move to folder "{folder[:80]}" is not a valid folder name; use at most 255 '
                "characters without line breaks, e.g. INBOX/Processed."
            )
        problem = folder_name_problem(folder)
        if problem:
            raise ValidationError(
                f'Move to folder "{folder}" {problem}; write the folder name as the server '
                "separates sub-folders, e.g. INBOX/Processed."
            )
        if folder == self.folder.data:
            raise ValidationError(
                f'Move to folder "{folder}" is the folder this connector scans; enter another '
                "folder, e.g. INBOX/Processed."
            )

    def validate_quarantine_folder(self, field: StringField) -> None:
        folder = field.data or ""
        if not folder or not self.reads_email:
            return
        if len(folder) > 255 or CONTROL_CHARACTERS.search(folder):
            raise ValidationError(
                f'Quarantine folder "{folder[:80]}" is not a valid folder name; use at most 255 '
                "characters without line breaks, e.g. Mailroom/Errors, or leave it empty."
            )
        if not folder.isascii():
            raise ValidationError(
                f'Quarantine folder "{folder}" contains letters outside ASCII, which Mailroom '
                "cannot send as an IMAP folder name yet; use ASCII letters, e.g. Mailroom/Errors."
            )
        if "*" in folder or "%" in folder:
            raise ValidationError(
                f'Quarantine folder "{folder}" contains * or %, which IMAP reads as wildcards '
                "when it looks the folder up; remove them, e.g. Mailroom/Errors."
            )
        problem = folder_name_problem(folder)
        if problem:
            raise ValidationError(
                f'Quarantine folder "{folder}" {problem}; write the folder name as the server '
                "separates sub-folders, e.g. Mailroom/Errors, or leave it empty."
            )
        if same_folder(folder, self.folder.data or "INBOX"):
            raise ValidationError(
                f'Quarantine folder "{folder}" is the folder this connector scans; enter '
                "another folder, e.g. Mailroom/Errors, or leave it empty."
            )
        moving = self.after_processing.data == AfterProcessing.MOVE.value
        if moving and same_folder(folder, self.move_to_folder.data or ""):
            raise ValidationError(
                f'Quarantine folder "{folder}" is also the Move to folder for processed '
                "e-mails; enter a separate folder, e.g. Mailroom/Errors, so that failed "
                "e-mails stay apart."
            )

    def validate_process_mail_after(self, field: UtcDateTimeField) -> None:
        if not self.reads_email:
            field.errors = []
            raise StopValidation()
        if field.process_errors:
            raise StopValidation()

    def validate_max_attempts(self, field: WholeNumberField) -> None:
        if field.process_errors:
            raise StopValidation()
        if field.data is None:
            raise ValidationError(
                "Attempts before quarantine is missing; enter a whole number from 1 to 20, "
                "usually 3."
            )
        if not MIN_ATTEMPTS <= field.data <= MAX_ATTEMPTS:
            raise ValidationError(
                f"Attempts before quarantine {field.data} is out of range; enter a whole "
                "number from 1 to 20."
            )

    def validate_oauth_client_id(self, field: StringField) -> None:
        if self.reads_email and field.data and len(field.data) > 512:
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
            language = get_by_id(self.context.session, Language, raw)
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

    def _row(self, model: Any, field: SelectField, choice_name: str) -> Any:
        """Return the row that the select names, or None when it is empty.

        Raises ValidationError when the row does not exist.
        """
        if not field.data:
            return None
        row = get_by_id(self.context.session, model, field.data)
        if row is None:
            raise ValidationError(
                f'{field.label.text} "{field.data}" does not exist; '
                f"choose {choice_name} from the list."
            )
        return row

    # Checks across fields -----------------------------------------------------

    def validate(self, extra_validators: Any = None) -> bool:
        """Merge the edited Robot Code, run the field checks, then the checks across fields.

        Errors of values that came from the Robot Code text are repeated under
        the text with their line, because the admin edited them there.
        """
        connector = self.context.connector
        saved_rules = dict(connector.rules or {}) if connector is not None else {}
        merge = merge_robot_code(self, self.context.session, saved_rules)
        self.robot_code_merge = merge
        super().validate(extra_validators)
        self._check_budget_code()
        self._check_languages()
        if self.reads_email:
            if self.auth_method.data == AuthMethod.OAUTH2.value:
                self._check_oauth2()
            elif self.auth_method.data == AuthMethod.PASSWORD.value:
                self._check_password()
        elif not self.files_location.errors:
            self._check_location_source()
        for role, section in self.store_sections():
            check_store(section.form, self.saved_stores.get(role))
        for message in [*merge.errors, *source_errors(self, merge)]:
            add_error(self.robot_code, message)
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
        add_error(self.budget_code, f'Budget code "{code}" is not a code of {client.name}; {fix}')

    def _check_languages(self) -> None:
        source = self.rows.source_language
        if source is not None and source in self.rows.target_languages:
            add_error(
                self.target_languages,
                f"Target Languages include the source language {source}; remove it.",
            )

    def _check_location_source(self) -> None:
        if self.generate_token.data:
            add_error(
                self.files_location,
                "Generate new token works only when Files location is E-mail; click Save instead.",
            )
        check_location(
            self.location_source.form,
            self.files_location.data,
            saved_password=self.location_password_is_saved,
            saved_private_key=self.location_private_key_is_saved,
        )

    def _check_password(self) -> None:
        if self.generate_token.data:
            add_error(
                self.auth_method,
                "Generate new token works only with the OAuth2 authorization method; "
                "choose OAuth2, or click Save to keep Password.",
            )
        if not self.password.data and not self.password_is_saved:
            add_error(self.password, "Password is missing; enter the mailbox password.")

    def _check_oauth2(self) -> None:
        provider = self._check_provider()
        username = self.username.data or ""
        if username and "@" not in username:
            add_error(
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
            add_error(
                self.oauth_client_id,
                "Client Id is missing; enter the Client Id of the app registered with "
                f"{provider.label}, which a token needs.",
            )
        if not has_secret and not token_active:
            add_error(
                self.oauth_client_secret,
                "Client Secret is missing; enter the Client Secret of the app registered "
                f"with {provider.label}.",
            )

    def _check_provider(self) -> Provider | None:
        key = self.provider.data or ""
        providers = self.context.providers
        labels = ", ".join(sorted(p.label for p in providers.values()))
        if not key:
            add_error(self.provider, f"Provider is missing; OAuth2 needs one of: {labels}.")
            return None
        if key not in providers:
            add_error(
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
