"""Outgoing e-mail forms: the SMTP fields of the company and of a branch, and the test e-mail.

The company's E-mail tab and a branch's E-mail tab share ``SmtpSettingsForm``;
``BranchForm`` adds the branch's own fields to it. Password and Client Secret
are write-only: the form never renders them back, and an empty field keeps
the saved value. Every error message names the rejected value and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from wtforms import (
    BooleanField,
    Field,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
)
from wtforms.validators import DataRequired, Length, ValidationError

from mailauth import Provider, SecretBox
from models import (
    Branch,
    Client,
    ConnectionType,
    MailAccount,
    SmtpAuthMethod,
    SmtpSettings,
    TokenStatus,
)
from outgoing import parse_server

from .connector_forms import find_account, strip_text

AUTH_METHOD_CHOICES = [
    SelectChoice(SmtpAuthMethod.NONE.value, "None"),
    SelectChoice(SmtpAuthMethod.PASSWORD.value, "Password"),
    SelectChoice(SmtpAuthMethod.OAUTH2.value, "OAuth2"),
]
CONNECTION_TYPE_CHOICES = [
    SelectChoice(ConnectionType.NOT_SECURED.value, "Not secured"),
    SelectChoice(ConnectionType.SSL.value, "SSL"),
    SelectChoice(ConnectionType.TLS.value, "TLS"),
]
CONNECTION_TYPE_HELP = (
    "SSL: TLS from the first byte (implicit TLS), usually port 465. "
    "TLS: the connection starts in plain text and must be upgraded with STARTTLS, usually "
    "port 587. Not secured: only for a relay on the same host, and never with a password or "
    "token."
)

MAX_HOST_LENGTH = 255  # the size of SmtpSettings.host
MAX_ADDRESS_LENGTH = 254  # the size of SmtpSettings.email_address and SmtpSettings.login
MAX_CLIENT_ID_LENGTH = 512  # the size of MailAccount.client_id

# One address without spaces, commas, quotes, angle brackets or control
# characters, so that it can neither add a second recipient nor a header.
_ADDRESS = re.compile(r"^[^\s@,;<>\"\x00-\x1f\x7f]+@[^\s@,;<>\"\x00-\x1f\x7f]+$")


@dataclass
class SmtpFormContext:
    """The database session, the configured OAuth2 providers and the saved SMTP settings.

    ``settings`` is None until the first save.
    """

    session: Session
    providers: dict[str, Provider]
    settings: SmtpSettings | None = None


class SmtpSettingsForm(FlaskForm):
    """The SMTP server, the sender mailbox and how Mailroom logs in to send from it."""

    auth_method = RadioField(
        "Authorization method",
        choices=AUTH_METHOD_CHOICES,
        default=SmtpAuthMethod.OAUTH2.value,
        validate_choice=False,
    )
    server = StringField(
        "SMTP Server",
        filters=[strip_text],
        description="Host name and port, e.g. smtp.example.com:587 or smtp.gmail.com:465.",
    )
    email_address = StringField(
        "E-mail Address",
        filters=[strip_text],
        description="The mailbox that notifications are sent from. With OAuth2 it is also "
        "the mailbox that gives consent.",
    )
    connection_type = SelectField(
        "Connection Type",
        choices=CONNECTION_TYPE_CHOICES,
        default=ConnectionType.TLS.value,
        validate_choice=False,
        description=CONNECTION_TYPE_HELP,
    )
    login = StringField(
        "Login",
        filters=[strip_text],
        description="Only for Password: the SMTP login, usually the e-mail address. "
        "Empty means the E-mail Address.",
    )
    password = PasswordField(
        "Password",
        description="Only for Password. Stored encrypted and never shown again.",
    )
    provider = SelectField(
        "Provider",
        validate_choice=False,
        description="The OAuth2 provider that hosts the mailbox.",
    )
    oauth_client_id = StringField(
        "Client Id",
        filters=[strip_text],
        description="The Client Id of the app registered with the provider.",
    )
    oauth_client_secret = PasswordField(
        "Client Secret",
        filters=[strip_text],
        description="The secret of that app registration. Stored encrypted and never shown again.",
    )

    save = SubmitField("Save")
    generate_token = SubmitField("Generate new token")

    def __init__(self, context: SmtpFormContext, **kwargs: Any) -> None:
        self.context = context
        # The mail account whose token state the page shows. Validation
        # replaces it by the account of the submitted provider and address.
        self.account: MailAccount | None = (
            context.settings.mail_account if context.settings else None
        )
        super().__init__(**kwargs)
        providers = sorted(context.providers.values(), key=lambda p: p.label.lower())
        self.provider.choices = [SelectChoice("", "Choose a provider")] + [
            SelectChoice(p.key, p.label) for p in providers
        ]

    @property
    def smtp_required(self) -> bool:
        """Whether SMTP Server, E-mail Address and the login secrets must be filled in."""
        return True

    @property
    def password_is_saved(self) -> bool:
        settings = self.context.settings
        return settings is not None and settings.password_encrypted is not None

    @property
    def client_secret_is_saved(self) -> bool:
        return self.account is not None and self.account.client_secret_encrypted is not None

    @property
    def token_is_active(self) -> bool:
        return self.account is not None and self.account.token_status == TokenStatus.ACTIVE

    # Field checks -------------------------------------------------------------

    def validate_auth_method(self, field: RadioField) -> None:
        require_choice(field, AUTH_METHOD_CHOICES)

    def validate_connection_type(self, field: SelectField) -> None:
        require_choice(field, CONNECTION_TYPE_CHOICES)

    def validate_server(self, field: StringField) -> None:
        if not field.data:
            return
        try:
            host, _port = parse_server(field.data)
        except ValueError as exc:
            raise ValidationError(f"{exc}.") from None
        if len(host) > MAX_HOST_LENGTH:
            raise ValidationError(
                f"SMTP Server host has {len(host)} characters; shorten it to at most "
                f"{MAX_HOST_LENGTH}."
            )

    def validate_email_address(self, field: StringField) -> None:
        if field.data:
            check_address("E-mail Address", field.data)

    def validate_login(self, field: StringField) -> None:
        if field.data and len(field.data) > MAX_ADDRESS_LENGTH:
            raise ValidationError(
                f"Login has {len(field.data)} characters; shorten it to at most "
                f"{MAX_ADDRESS_LENGTH}."
            )

    def validate_oauth_client_id(self, field: StringField) -> None:
        if field.data and len(field.data) > MAX_CLIENT_ID_LENGTH:
            raise ValidationError(
                f"Client Id has {len(field.data)} characters; shorten it to at most "
                f"{MAX_CLIENT_ID_LENGTH}."
            )

    # Checks across fields -----------------------------------------------------

    def validate(self, extra_validators: Any = None) -> bool:
        """Run the field checks, then the checks that depend on the authorization method."""
        super().validate(extra_validators)
        self.account = None
        self._check_smtp()
        return not self.errors

    def _check_smtp(self) -> None:
        # Consent needs a complete OAuth2 setup even where the fields are optional.
        required = self.smtp_required or bool(self.generate_token.data)
        if required and not self.server.data:
            add_error(
                self.server,
                "SMTP Server is missing; enter it as host:port, e.g. smtp.example.com:587.",
            )
        if required and not self.email_address.data:
            add_error(
                self.email_address,
                "E-mail Address is missing; enter the mailbox that sends the notifications, "
                "e.g. office@example.com.",
            )

        method = self.auth_method.data
        if (
            method in (SmtpAuthMethod.PASSWORD.value, SmtpAuthMethod.OAUTH2.value)
            and self.connection_type.data == ConnectionType.NOT_SECURED.value
        ):
            add_error(
                self.connection_type,
                "Connection Type Not secured would send the password or token in plain text; "
                "choose SSL (usually port 465) or TLS (usually port 587).",
            )
        if self.generate_token.data and method != SmtpAuthMethod.OAUTH2.value:
            add_error(
                self.auth_method,
                "Generate new token works only with the OAuth2 authorization method; choose "
                "OAuth2, or click Save.",
            )
        if method == SmtpAuthMethod.PASSWORD.value:
            if required and not self.password.data and not self.password_is_saved:
                add_error(
                    self.password, "Password is missing; enter the password of the SMTP login."
                )
        elif method == SmtpAuthMethod.OAUTH2.value:
            self._check_oauth2(required)

    def _check_oauth2(self, required: bool) -> None:
        provider = self._check_provider(required)
        address = self.email_address.data or ""
        if provider is None or not address or self.email_address.errors:
            return
        self.account = find_account(self.context.session, provider.key, address)
        has_client_id = bool(self.oauth_client_id.data) or bool(
            self.account and self.account.client_id
        )
        has_secret = bool(self.oauth_client_secret.data) or self.client_secret_is_saved
        # An active token, perhaps granted to a Smart Connector with the same
        # address, lets the settings be saved without the app registration.
        if not has_client_id and (
            self.generate_token.data or (required and not self.token_is_active)
        ):
            add_error(
                self.oauth_client_id,
                "Client Id is missing; enter the Client Id of the app registered with "
                f"{provider.label}, which a token needs.",
            )
        if not has_secret and required and not self.token_is_active:
            add_error(
                self.oauth_client_secret,
                "Client Secret is missing; enter the Client Secret of the app registered with "
                f"{provider.label}.",
            )

    def _check_provider(self, required: bool) -> Provider | None:
        key = self.provider.data or ""
        providers = self.context.providers
        labels = ", ".join(sorted(p.label for p in providers.values()))
        if not key:
            if required:
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


class BranchForm(SmtpSettingsForm):
    """A branch: its name, its clients, and the SMTP server it may use instead of the company's."""

    name = StringField(
        "Name",
        filters=[strip_text],
        validators=[
            DataRequired("Name is missing; enter the name of the branch."),
            Length(
                max=200, message="Name has %(length)d characters; shorten it to at most %(max)d."
            ),
        ],
    )
    clients = SelectMultipleField(
        "Clients",
        validate_choice=False,
        description="Mail about these clients goes through this branch's SMTP server when "
        "Use Own SMTP Server is checked. A client belongs to one branch, so choosing a client "
        "of another branch moves it here. Hold Ctrl (or Cmd on a Mac) to choose several.",
    )
    use_own_smtp = BooleanField(
        "Use Own SMTP Server",
        description="Checked: mail about this branch's clients is sent through the server below. "
        "Unchecked: through the company's server, and the fields below may stay empty.",
    )

    def __init__(self, context: SmtpFormContext, branch: Branch | None, **kwargs: Any) -> None:
        self.branch = branch
        self.chosen_clients: list[Client] = []
        super().__init__(context, **kwargs)
        self._load_client_choices()

    def _load_client_choices(self) -> None:
        # NOTE: every client is an option, which suits hundreds of clients.
        # Thousands would need a search field instead.
        rows = self.context.session.execute(
            sa.select(Client.id, Client.name, Client.branch_id, Branch.name)
            .outerjoin(Branch, Client.branch_id == Branch.id)
            .order_by(Client.name)
        ).all()
        own_id = self.branch.id if self.branch else None
        choices = []
        for client_id, client_name, branch_id, branch_name in rows:
            label = client_name
            if branch_id is not None and branch_id != own_id:
                label = f"{client_name} (now in {branch_name})"
            choices.append(SelectChoice(str(client_id), label))
        self.clients.choices = choices

    @property
    def smtp_required(self) -> bool:
        """Only a branch that uses its own server needs complete SMTP fields."""
        return bool(self.use_own_smtp.data)

    def validate_name(self, field: StringField) -> None:
        query = sa.select(Branch.id).where(Branch.name == field.data)
        if self.branch is not None:
            query = query.where(Branch.id != self.branch.id)
        if self.context.session.scalars(query).first() is not None:
            raise ValidationError(duplicate_branch_message(field.data))

    def validate_clients(self, field: SelectMultipleField) -> None:
        chosen = []
        for raw in field.data or []:
            client = None
            # Longer digit strings would overflow a 64-bit integer column.
            if raw.isdigit() and len(raw) <= 18:
                client = self.context.session.get(Client, int(raw))
            if client is None:
                raise ValidationError(
                    f'Client "{raw}" does not exist; choose clients from the list.'
                )
            chosen.append(client)
        self.chosen_clients = chosen


class EmailTestForm(FlaskForm):
    """The "Send Test E-mail to" address and its Test button, posted apart from the settings."""

    recipient = StringField(
        "Send Test E-mail to",
        filters=[strip_text],
        description="Sends one message now through the saved settings. Unsaved changes above "
        "are not used, and replies go to your own address.",
    )
    send = SubmitField("Test")

    def validate_recipient(self, field: StringField) -> None:
        if not field.data:
            raise ValidationError(
                "Send Test E-mail to is missing; enter the address that should receive the "
                "test e-mail."
            )
        check_address("Send Test E-mail to", field.data)


# Saving -------------------------------------------------------------------------


def smtp_initial_data(settings: SmtpSettings | None) -> dict[str, Any]:
    """Return the form values of saved ``settings``, or none so that the defaults apply.

    Secrets are left out because their fields are write-only.
    """
    if settings is None:
        return {}
    account = settings.mail_account
    return {
        "auth_method": settings.auth_method.value,
        "server": format_server(settings.host, settings.port),
        "email_address": settings.email_address or "",
        "connection_type": settings.connection_type.value,
        "login": settings.login or "",
        "provider": account.provider if account else "",
        "oauth_client_id": account.client_id if account and account.client_id else "",
    }


def branch_initial_data(branch: Branch | None, session: Session) -> dict[str, Any]:
    """Return the form values of ``branch`` and its SMTP settings, or none for a new branch."""
    if branch is None:
        return {}
    client_ids = session.scalars(sa.select(Client.id).where(Client.branch_id == branch.id))
    return {
        **smtp_initial_data(branch.smtp),
        "name": branch.name,
        "use_own_smtp": branch.use_own_smtp,
        "clients": [str(client_id) for client_id in client_ids],
    }


def apply_smtp_form(form: SmtpSettingsForm, settings: SmtpSettings, box: SecretBox) -> None:
    """Copy the validated SMTP fields into ``settings``; the caller commits.

    The password is kept only with the Password method, so switching to
    another method deletes it. A mail account is only unlinked, never
    deleted, because connectors and other settings may share it.
    """
    host: str | None = None
    port: int | None = None
    if form.server.data:
        host, port = parse_server(form.server.data)
    method = SmtpAuthMethod(form.auth_method.data)
    settings.auth_method = method
    settings.host = host
    settings.port = port
    settings.email_address = form.email_address.data or None
    settings.connection_type = ConnectionType(form.connection_type.data)
    settings.login = form.login.data or None

    if method == SmtpAuthMethod.PASSWORD:
        settings.mail_account = None
        if form.password.data:
            settings.password_encrypted = box.encrypt(form.password.data)
    elif method == SmtpAuthMethod.OAUTH2:
        settings.password_encrypted = None
        settings.mail_account = _save_account(form, box)
    else:
        settings.password_encrypted = None
        settings.mail_account = None


def apply_branch_form(form: BranchForm, branch: Branch | None, box: SecretBox) -> Branch:
    """Copy the validated form into ``branch``, or a new one, and return it; the caller commits.

    Raises IntegrityError when another branch took the name meanwhile.
    """
    session = form.context.session
    if branch is None:
        branch = Branch()
        session.add(branch)
    branch.name = form.name.data
    branch.use_own_smtp = bool(form.use_own_smtp.data)
    session.flush()  # a new branch needs its id before clients can point to it

    chosen_ids = {client.id for client in form.chosen_clients}
    for client in session.scalars(sa.select(Client).where(Client.branch_id == branch.id)):
        if client.id not in chosen_ids:
            client.branch_id = None
    for client in form.chosen_clients:
        client.branch_id = branch.id

    if branch.smtp is None:
        branch.smtp = SmtpSettings()
    apply_smtp_form(form, branch.smtp, box)
    return branch


def _save_account(form: SmtpSettingsForm, box: SecretBox) -> MailAccount | None:
    """Fetch or create the shared account and store the Client Id and the encrypted secret.

    Returns None when the provider or the address is still empty, which only
    a branch that does not use its own server may save.
    """
    provider = form.provider.data
    address = form.email_address.data
    if not provider or not address:
        return None
    account = form.account
    if account is None:
        account = MailAccount(provider=provider, email=address.lower())
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


# Helpers --------------------------------------------------------------------------


def format_server(host: str | None, port: int | None) -> str:
    """Return "host:port" as the SMTP Server field shows it, with an IPv6 address in brackets."""
    if not host or not port:
        return ""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def duplicate_branch_message(name: str) -> str:
    return f'Name "{name}" is already used by another branch; choose another name.'


def check_address(label: str, address: str) -> None:
    """Raise ValidationError unless ``address`` is one plain e-mail address."""
    if len(address) > MAX_ADDRESS_LENGTH:
        raise ValidationError(
            f"{label} has {len(address)} characters; shorten it to at most {MAX_ADDRESS_LENGTH}."
        )
    if not _ADDRESS.match(address):
        raise ValidationError(
            f'{label} "{address}" is not an e-mail address; enter one address such as '
            "office@example.com, without a name or angle brackets."
        )


def require_choice(field: Field, choices: list[SelectChoice]) -> None:
    labels = " or ".join(choice.label for choice in choices)
    if not field.data:
        raise ValidationError(f"{field.label.text} is missing; choose {labels}.")
    if field.data not in {choice.value for choice in choices}:
        raise ValidationError(f'{field.label.text} "{field.data}" is not valid; choose {labels}.')


def add_error(field: Field, message: str) -> None:
    # Field.errors is a tuple until the field was validated, a list afterwards.
    field.errors = [*field.errors, message]
