"""The company's E-mail settings page: saving each method, secrets, tokens and the test e-mail.

Page tests read the rendered form the way a browser does, change some fields
and post it back, so a renamed or missing input fails here. The Test button
tests send through the real Dovecot submission service, which relays to the
SMTP sink of ``mail_stack``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict
from werkzeug.serving import make_server

import migrations
from config import Settings
from models import (
    ConnectionType,
    MailAccount,
    OAuthState,
    SmtpAuthMethod,
    SmtpSettings,
    TokenStatus,
    User,
)
from web import create_app
from web.security import hash_password

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, make_settings
from .mailhelpers import give_consent
from .servers import (
    MAILBOX_PASSWORD,
    MAILBOX_USER,
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    PASSWORD_USER,
    PASSWORD_USER_PASSWORD,
    MailStack,
)
from .smtp_servers import Received

EDIT = "/configuration/general/settings/email"
TEST = f"{EDIT}/test"
SETTINGS_FORM = "smtp-form"
TEST_FORM = "test-email-form"
SAVED_PLACEHOLDER = "Saved — leave empty to keep"
ACTIVE_TOKEN = "Your access token is active"

LOCAL_PROVIDER = {
    "local": {
        "label": "Local",
        "authorization_url": "http://127.0.0.1:9/authorize",
        "token_url": "http://127.0.0.1:9/token",
        "scopes": ["mail"],
    }
}
SMTP_PASSWORD = "smtp-pw-Vq72k-never-in-html"
CLIENT_SECRET = "secret-Rt93m-never-in-html"
USER_PASSWORD = "a user password of some length"
RECIPIENT = "reader@example.org"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, request: pytest.FixtureRequest) -> Settings:
    """Settings with a local OAuth provider; with Dovecot's CA and providers when a test uses it."""
    if "mail_stack" not in request.fixturenames:
        return make_settings(tmp_path, redis_url, oauth_providers=LOCAL_PROVIDER)
    stack: MailStack = request.getfixturevalue("mail_stack")
    return make_settings(
        tmp_path,
        redis_url,
        oauth_providers=stack.provider_config(),
        ca_file=stack.dovecot.ca_file,
        mail_timeout=5.0,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The app without an app context held open during the test.

    A held context would make every test request share one ``g``, so the
    CSRF token and the database session would leak from request to request.
    """
    migrations.upgrade(settings.database_url)
    app = create_app(settings, TESTING=True)
    yield app
    app.extensions["mailroom"].db.dispose()


@pytest.fixture
def user_client(app: Flask, services: Any) -> FlaskClient:
    """A logged-in user who is not an admin."""
    with services.db.session() as session:
        session.add(
            User(
                email="user@mailroom.test", name="User", password_hash=hash_password(USER_PASSWORD)
            )
        )
        session.commit()
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post(
        "/login",
        data={"csrf_token": token, "email": "user@mailroom.test", "password": USER_PASSWORD},
    )
    assert response.status_code == 302, response.text
    return client


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """Serve the app on a free loopback port in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


@pytest.fixture
def browser_page(live_url: str, admin: User) -> Iterator[Any]:
    """A Chromium page logged in as the admin, allowed to load only from the app."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary on PATH for the browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        outside: list[str] = []

        def only_loopback(route: Any) -> None:
            if route.request.url.startswith(live_url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_loopback)
        page.set_default_timeout(10_000)
        page.goto(f"{live_url}/login")
        page.get_by_label("E-mail Address").fill(ADMIN_EMAIL)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{live_url}/")
        yield page
        browser.close()
        assert outside == []


# Reading pages ----------------------------------------------------------------


class FormReader(HTMLParser):
    """Collect what a browser would submit with one form, and every field error on the page.

    A control belongs to the form when it sits inside it without a ``form``
    attribute, or names the form in its ``form`` attribute anywhere on the page.
    """

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside_form = False
        self.values: list[tuple[str, str]] = []
        self.select: tuple[str, bool] | None = None  # name, multiple
        self.select_options: list[tuple[str, bool]] = []
        self.errors: dict[str, list[str]] = {}
        self.error_field: str | None = None
        self.error_depth = 0

    def _belongs(self, attributes: dict[str, str]) -> bool:
        if "form" in attributes:
            return attributes["form"] == self.form_id
        return self.inside_form

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form" and attributes.get("id") == self.form_id:
            self.inside_form = True
        if tag == "div":
            self._start_div(attributes)
        if tag == "input" and self._belongs(attributes):
            self._read_input(attributes)
        elif tag == "select" and self._belongs(attributes):
            self.select = (attributes["name"], "multiple" in attributes)
            self.select_options = []
        elif tag == "option" and self.select is not None:
            self.select_options.append((attributes.get("value", ""), "selected" in attributes))

    def handle_data(self, data: str) -> None:
        if self.error_field is not None and self.error_depth > 1:
            self.errors[self.error_field][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.error_field is not None:
            self.error_depth -= 1
            if self.error_depth == 0:
                self.errors[self.error_field] = [e.strip() for e in self.errors[self.error_field]]
                self.error_field = None
        if tag == "select" and self.select is not None:
            self._finish_select()
        elif tag == "form" and self.inside_form:
            self.inside_form = False

    def _start_div(self, attributes: dict[str, str]) -> None:
        element_id = attributes.get("id", "")
        if self.error_field is not None:
            self.error_depth += 1
            self.errors[self.error_field].append("")
        elif element_id.endswith("-error"):
            self.error_field = element_id.removesuffix("-error")
            self.error_depth = 1
            self.errors[self.error_field] = []

    def _read_input(self, attributes: dict[str, str]) -> None:
        kind = attributes.get("type", "text")
        name = attributes.get("name")
        if not name or kind in ("submit", "button"):
            return
        if kind in ("checkbox", "radio") and "checked" not in attributes:
            return
        self.values.append((name, attributes.get("value", "")))

    def _finish_select(self) -> None:
        assert self.select is not None
        name, multiple = self.select
        chosen = [value for value, selected in self.select_options if selected]
        if not chosen and not multiple and self.select_options:
            chosen = [self.select_options[0][0]]  # a browser sends the first option
        self.values.extend((name, value) for value in chosen)
        self.select = None


def read_form(html: str, form_id: str = SETTINGS_FORM) -> FormReader:
    reader = FormReader(form_id)
    reader.feed(html)
    assert reader.values, f"no form #{form_id} in the page"
    return reader


def submit(
    client: FlaskClient,
    url: str,
    changes: dict[str, Any],
    button: str = "save",
    form_id: str = SETTINGS_FORM,
) -> Any:
    """Post the form of ``url`` as a browser would after the user typed ``changes``.

    A change of None removes the field, like an unchecked checkbox.
    """
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    values = MultiDict(read_form(page.text, form_id).values)
    for name, value in changes.items():
        if value is None:
            values.poplist(name)
        else:
            values.setlist(name, value if isinstance(value, list) else [value])
    values[button] = {"save": "Save", "generate_token": "Generate new token"}[button]
    return client.post(url, data=values)


def send_test(client: FlaskClient, page_url: str, action: str, recipient: str) -> Any:
    page = client.get(page_url)
    assert page.status_code == 200, page.status_code
    values = MultiDict(read_form(page.text, TEST_FORM).values)
    values["test-recipient"] = recipient
    values["test-send"] = "Test"
    return client.post(action, data=values, follow_redirects=True)


def password_fields(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "auth_method": "password",
        "server": "smtp.example.com:587",
        "email_address": "office@example.com",
        "connection_type": "tls",
        "login": "office-login",
        "password": SMTP_PASSWORD,
        "provider": "",
        "oauth_client_id": "",
        "oauth_client_secret": "",
    }
    values.update(changes)
    return values


def oauth_fields(**changes: Any) -> dict[str, Any]:
    values = password_fields(
        auth_method="oauth2",
        server="smtp.example.com:465",
        email_address="Office@Example.com",
        connection_type="ssl",
        login="",
        password="",
        provider="local",
        oauth_client_id="mailroom-app",
        oauth_client_secret=CLIENT_SECRET,
    )
    values.update(changes)
    return values


def company_row(services: Any) -> SmtpSettings:
    with services.db.session() as session:
        row = session.scalars(sa.select(SmtpSettings).where(SmtpSettings.branch_id.is_(None))).one()
        session.expunge(row)
        return row


def field_errors(response: Any, form_id: str = SETTINGS_FORM) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code
    return read_form(response.text, form_id).errors


# Page ---------------------------------------------------------------------------


def test_page_has_tabs_labels_and_help(logged_in) -> None:
    page = logged_in.get(EDIT)
    assert page.status_code == 200
    text = page.text
    assert '<a class="nav-link active" aria-current="page"' in text
    for label in (
        "Settings", "E-mail", "Authorization method", "None", "Password", "OAuth2",
        "SMTP Server", "E-mail Address", "Connection Type", "Not secured", "SSL", "TLS",
        "Login", "OAuth2 Configuration", "Provider", "Client Id", "Client Secret", "Save",
        "Generate new token", "Send Test E-mail to", "Test",
    ):  # fmt: skip
        assert label in text, label
    for field in ("server", "email_address", "connection_type", "login", "password"):
        assert f'for="{field}"' in text, field
    for field in ("provider", "oauth_client_id", "oauth_client_secret", "test-recipient"):
        assert f'for="{field}"' in text, field
    assert "implicit TLS), usually port 465" in text
    assert "STARTTLS, usually port 587" in text
    assert "only for a relay on the same host, and never with a password or token" in text
    assert "cdn" not in text.lower()


def test_settings_index_opens_email_tab(logged_in) -> None:
    response = logged_in.get("/configuration/general/settings")
    assert response.status_code == 302
    assert response.headers["Location"] == EDIT


def test_test_address_defaults_to_admin(logged_in) -> None:
    values = dict(read_form(logged_in.get(EDIT).text, TEST_FORM).values)
    assert values["test-recipient"] == ADMIN_EMAIL
    assert values["test-csrf_token"]


# Saving -------------------------------------------------------------------------


def test_save_without_authorization(logged_in, services) -> None:
    changes = password_fields(
        auth_method="none", server="relay.example.com:25", connection_type="none", password=""
    )
    response = submit(logged_in, EDIT, changes)
    assert response.status_code == 302, read_form(response.text).errors
    row = company_row(services)
    assert row.auth_method == SmtpAuthMethod.NONE
    assert (row.host, row.port) == ("relay.example.com", 25)
    assert row.connection_type == ConnectionType.NOT_SECURED
    assert row.email_address == "office@example.com"
    assert row.password_encrypted is None
    assert row.mail_account_id is None


def test_save_password(logged_in, services) -> None:
    response = submit(logged_in, EDIT, password_fields())
    assert response.status_code == 302, read_form(response.text).errors
    assert response.headers["Location"] == EDIT
    assert "The e-mail settings were saved." in logged_in.get(EDIT).text
    row = company_row(services)
    assert row.auth_method == SmtpAuthMethod.PASSWORD
    assert (row.host, row.port) == ("smtp.example.com", 587)
    assert row.connection_type == ConnectionType.TLS
    assert row.login == "office-login"
    assert row.password_encrypted is not None
    assert SMTP_PASSWORD.encode() not in row.password_encrypted
    assert services.box.decrypt(row.password_encrypted) == SMTP_PASSWORD


def test_save_oauth2_creates_account(logged_in, services) -> None:
    response = submit(logged_in, EDIT, oauth_fields())
    assert response.status_code == 302, read_form(response.text).errors
    row = company_row(services)
    assert row.auth_method == SmtpAuthMethod.OAUTH2
    assert (row.host, row.port, row.connection_type) == ("smtp.example.com", 465, "ssl")
    assert row.email_address == "Office@Example.com"
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
    assert row.mail_account_id == account.id
    assert (account.provider, account.email) == ("local", "office@example.com")
    assert account.client_id == "mailroom-app"
    assert account.client_secret_encrypted is not None
    assert services.box.decrypt(account.client_secret_encrypted) == CLIENT_SECRET


def test_save_oauth2_reuses_account(logged_in, services) -> None:
    with services.db.session() as session:
        session.add(MailAccount(provider="local", email="office@example.com", client_id="old"))
        session.commit()
    response = submit(logged_in, EDIT, oauth_fields(oauth_client_id=""))
    assert response.status_code == 302, read_form(response.text).errors
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
    assert company_row(services).mail_account_id == account.id
    assert account.client_id == "old"


def test_second_save_updates_same_row(logged_in, services) -> None:
    assert submit(logged_in, EDIT, password_fields()).status_code == 302
    assert submit(logged_in, EDIT, {"server": "mail.example.com:2525"}).status_code == 302
    with services.db.session() as session:
        rows = session.scalars(sa.select(SmtpSettings)).all()
    assert [(row.host, row.port) for row in rows] == [("mail.example.com", 2525)]


def test_switch_to_oauth2_drops_password(logged_in, services) -> None:
    assert submit(logged_in, EDIT, password_fields()).status_code == 302
    assert submit(logged_in, EDIT, oauth_fields()).status_code == 302
    row = company_row(services)
    assert row.password_encrypted is None
    assert row.mail_account_id is not None


def test_switch_to_password_unlinks_account(logged_in, services) -> None:
    assert submit(logged_in, EDIT, oauth_fields()).status_code == 302
    assert submit(logged_in, EDIT, password_fields()).status_code == 302
    assert company_row(services).mail_account_id is None
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(MailAccount.id))) == 1  # shared, so kept


def test_ipv6_server_round_trips(logged_in, services) -> None:
    assert submit(logged_in, EDIT, password_fields(server="[::1]:587")).status_code == 302
    assert (company_row(services).host, company_row(services).port) == ("::1", 587)
    assert ("server", "[::1]:587") in read_form(logged_in.get(EDIT).text).values


# Checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "",
            "SMTP Server is missing; enter it as host:port, e.g. smtp.example.com:587.",
        ),
        (
            "smtp.example.com",
            "SMTP Server 'smtp.example.com' has no port; write it as host:port, "
            "e.g. smtp.example.com:587.",
        ),
        (
            "smtp.example.com:smtp",
            "SMTP Server port 'smtp' is not a port number from 1 to 65535.",
        ),
        (
            "smtp.example.com:70000",
            "SMTP Server port '70000' is not a port number from 1 to 65535.",
        ),
        (
            "smtp.example.com:0",
            "SMTP Server port '0' is not a port number from 1 to 65535.",
        ),
        (
            "smtp example.com:587",
            "SMTP Server host 'smtp example.com' is not a host name.",
        ),
        (
            "smtp://smtp.example.com:587",
            "SMTP Server host 'smtp://smtp.example.com' is not a host name.",
        ),
    ],
)
def test_bad_smtp_server(logged_in, services, value, message) -> None:
    response = submit(logged_in, EDIT, password_fields(server=value))
    assert field_errors(response) == {"server": [message]}
    assert "The e-mail settings were not saved." in response.text
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(SmtpSettings.id))) == 0


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        (
            {"email_address": ""},
            {
                "email_address": [
                    "E-mail Address is missing; enter the mailbox that sends the notifications, "
                    "e.g. office@example.com."
                ]
            },
        ),
        (
            {"email_address": "Office <office@example.com>"},
            {
                "email_address": [
                    'E-mail Address "Office <office@example.com>" is not an e-mail address; '
                    "enter one address such as office@example.com, without a name or angle "
                    "brackets."
                ]
            },
        ),
        (
            {"password": ""},
            {"password": ["Password is missing; enter the password of the SMTP login."]},
        ),
        (
            {"connection_type": "none"},
            {
                "connection_type": [
                    "Connection Type Not secured would send the password or token in plain "
                    "text; choose SSL (usually port 465) or TLS (usually port 587)."
                ]
            },
        ),
        (
            {"connection_type": "starttls"},
            {"connection_type": ['Connection Type "starttls" is not valid; choose Not secured '
                                 "or SSL or TLS."]},
        ),
        (
            {"auth_method": "ntlm"},
            {"auth_method": ['Authorization method "ntlm" is not valid; choose None or '
                             "Password or OAuth2."]},
        ),
    ],
)  # fmt: skip
def test_bad_password_settings(logged_in, changes, errors) -> None:
    response = submit(logged_in, EDIT, password_fields(**changes))
    assert field_errors(response) == errors


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        (
            {"provider": ""},
            {"provider": ["Provider is missing; OAuth2 needs one of: Google, Local, "
                          "Microsoft 365."]},
        ),
        (
            {"provider": "yahoo"},
            {"provider": ['Provider "yahoo" is not configured; choose one of: Google, Local, '
                          "Microsoft 365, or add it to OAUTH_PROVIDERS."]},
        ),
        (
            {"oauth_client_id": ""},
            {"oauth_client_id": ["Client Id is missing; enter the Client Id of the app "
                                 "registered with Local, which a token needs."]},
        ),
        (
            {"oauth_client_secret": ""},
            {"oauth_client_secret": ["Client Secret is missing; enter the Client Secret of the "
                                     "app registered with Local."]},
        ),
        (
            {"connection_type": "none"},
            {"connection_type": ["Connection Type Not secured would send the password or token "
                                 "in plain text; choose SSL (usually port 465) or TLS (usually "
                                 "port 587)."]},
        ),
    ],
)  # fmt: skip
def test_bad_oauth2_settings(logged_in, changes, errors) -> None:
    response = submit(logged_in, EDIT, oauth_fields(**changes))
    assert field_errors(response) == errors


def test_failed_post_keeps_typed_values(logged_in) -> None:
    response = submit(logged_in, EDIT, password_fields(server="smtp.example.com"))
    values = dict(read_form(response.text).values)
    assert values["server"] == "smtp.example.com"
    assert values["email_address"] == "office@example.com"
    assert values["login"] == "office-login"
    assert values["auth_method"] == "password"
    assert values["connection_type"] == "tls"
    assert values["password"] == ""
    assert SMTP_PASSWORD not in response.text
    assert "enter the Password or Client Secret again" in response.text


# Secrets ------------------------------------------------------------------------


def test_secrets_absent_from_pages(logged_in, services) -> None:
    responses = [submit(logged_in, EDIT, password_fields(login="")), logged_in.get(EDIT)]
    responses.append(submit(logged_in, EDIT, oauth_fields()))
    responses.append(logged_in.get(EDIT))
    # Failed posts return the page with the typed values, except the secrets.
    responses.append(submit(logged_in, EDIT, password_fields(server="bad")))
    responses.append(submit(logged_in, EDIT, oauth_fields(server="bad")))
    responses.append(send_test(logged_in, EDIT, TEST, "not an address"))
    for response in responses:
        assert SMTP_PASSWORD not in response.text
        assert CLIENT_SECRET not in response.text


def test_saved_secrets_show_placeholder(logged_in) -> None:
    assert SAVED_PLACEHOLDER not in logged_in.get(EDIT).text
    assert submit(logged_in, EDIT, password_fields()).status_code == 302
    assert f'placeholder="{SAVED_PLACEHOLDER}"' in logged_in.get(EDIT).text
    assert submit(logged_in, EDIT, oauth_fields()).status_code == 302
    page = logged_in.get(EDIT).text
    assert page.count(f'placeholder="{SAVED_PLACEHOLDER}"') == 1  # the Client Secret
    assert ("oauth_client_id", "mailroom-app") in read_form(page).values


def test_empty_password_keeps_saved_one(logged_in, services) -> None:
    assert submit(logged_in, EDIT, password_fields()).status_code == 302
    response = submit(logged_in, EDIT, {"password": "", "login": "new-login"})
    assert response.status_code == 302, read_form(response.text).errors
    row = company_row(services)
    assert row.login == "new-login"
    assert services.box.decrypt(row.password_encrypted) == SMTP_PASSWORD


def test_new_password_replaces_saved_one(logged_in, services) -> None:
    assert submit(logged_in, EDIT, password_fields()).status_code == 302
    assert submit(logged_in, EDIT, {"password": "another one"}).status_code == 302
    assert services.box.decrypt(company_row(services).password_encrypted) == "another one"


def test_empty_client_secret_keeps_saved_one(logged_in, services) -> None:
    assert submit(logged_in, EDIT, oauth_fields()).status_code == 302
    response = submit(logged_in, EDIT, {"oauth_client_secret": ""})
    assert response.status_code == 302, read_form(response.text).errors
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
    assert services.box.decrypt(account.client_secret_encrypted) == CLIENT_SECRET


# Token state --------------------------------------------------------------------


def add_account(services: Any, status: TokenStatus, reason: str | None = None) -> int:
    with services.db.session() as session:
        account = MailAccount(
            provider="local",
            email="office@example.com",
            token_status=status,
            token_status_reason=reason,
        )
        session.add(account)
        session.commit()
        return account.id


def test_active_account_needs_no_client_fields(logged_in, services) -> None:
    account_id = add_account(services, TokenStatus.ACTIVE)
    changes = oauth_fields(oauth_client_id="", oauth_client_secret="")
    response = submit(logged_in, EDIT, changes)
    assert response.status_code == 302, read_form(response.text).errors
    assert company_row(services).mail_account_id == account_id
    page = logged_in.get(EDIT).text
    assert ACTIVE_TOKEN in page
    assert "Client Id and Client Secret may stay empty" in page


def test_settings_row_shows_active_token(logged_in, services) -> None:
    account_id = add_account(services, TokenStatus.ACTIVE)
    with services.db.session() as session:
        session.add(
            SmtpSettings(
                auth_method=SmtpAuthMethod.OAUTH2,
                host="smtp.example.com",
                port=587,
                email_address="office@example.com",
                mail_account_id=account_id,
            )
        )
        session.commit()
    page = logged_in.get(EDIT).text
    assert ACTIVE_TOKEN in page
    values = dict(read_form(page).values)
    assert values["provider"] == "local"
    assert values["oauth_client_id"] == ""
    # Saving again requires neither Client Id nor Client Secret.
    assert submit(logged_in, EDIT, {}).status_code == 302


def test_needs_consent_shows_reason(logged_in, services) -> None:
    add_account(services, TokenStatus.NEEDS_CONSENT, "the refresh token was revoked")
    assert submit(logged_in, EDIT, oauth_fields()).status_code == 302
    page = logged_in.get(EDIT).text
    assert "The access token needs new consent: the refresh token was revoked" in page
    assert ACTIVE_TOKEN not in page


def test_client_error_shows_reason(logged_in, services) -> None:
    add_account(services, TokenStatus.CLIENT_ERROR, "invalid_client: unknown Client Id")
    assert submit(logged_in, EDIT, oauth_fields()).status_code == 302
    page = logged_in.get(EDIT).text
    assert "The provider rejected the app registration: invalid_client: unknown Client Id" in page


def test_changed_client_id_needs_new_consent(logged_in, services) -> None:
    assert submit(logged_in, EDIT, oauth_fields()).status_code == 302
    with services.db.session() as session:
        session.scalars(sa.select(MailAccount)).one().token_status = TokenStatus.ACTIVE
        session.commit()
    assert submit(logged_in, EDIT, {"oauth_client_id": "another-app"}).status_code == 302
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
    assert account.client_id == "another-app"
    assert account.token_status == TokenStatus.NEEDS_CONSENT


# Generate new token ---------------------------------------------------------------


def assert_authorization_redirect(response: Any, email: str) -> None:
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        "http://127.0.0.1:9/authorize"
    )
    query = parse_qs(location.query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert len(query["state"][0]) >= 32
    assert query["client_id"] == ["mailroom-app"]
    assert query["response_type"] == ["code"]
    assert query["login_hint"] == [email]
    assert query["redirect_uri"] == ["http://localhost/home-api/authentication/mail/oauth2/code"]


def test_generate_token_saves_then_redirects(logged_in, services) -> None:
    response = submit(logged_in, EDIT, oauth_fields(), button="generate_token")
    assert_authorization_redirect(response, "office@example.com")
    row = company_row(services)
    with services.db.session() as session:
        state = session.scalars(sa.select(OAuthState)).one()
    assert state.mail_account_id == row.mail_account_id
    assert state.return_to == EDIT


def test_generate_token_needs_client_id(logged_in, services) -> None:
    add_account(services, TokenStatus.ACTIVE)
    changes = oauth_fields(oauth_client_id="", oauth_client_secret="")
    response = submit(logged_in, EDIT, changes, button="generate_token")
    assert field_errors(response) == {
        "oauth_client_id": [
            "Client Id is missing; enter the Client Id of the app registered with Local, "
            "which a token needs."
        ]
    }


def test_generate_token_needs_oauth2(logged_in) -> None:
    response = submit(logged_in, EDIT, password_fields(), button="generate_token")
    assert field_errors(response) == {
        "auth_method": [
            "Generate new token works only with the OAuth2 authorization method; choose "
            "OAuth2, or click Save."
        ]
    }


# Test e-mail without a server ---------------------------------------------------------


def test_test_email_before_any_save(logged_in) -> None:
    response = send_test(logged_in, EDIT, TEST, RECIPIENT)
    assert response.status_code == 200
    assert "No SMTP server is saved yet; fill in the E-mail tab and click Save" in response.text


def test_test_email_rejects_bad_address(logged_in) -> None:
    assert submit(logged_in, EDIT, password_fields()).status_code == 302
    response = send_test(logged_in, EDIT, TEST, "reader at example.org")
    errors = read_form(response.text, TEST_FORM).errors
    assert errors == {
        "test-recipient": [
            'Send Test E-mail to "reader at example.org" is not an e-mail address; enter one '
            "address such as office@example.com, without a name or angle brackets."
        ]
    }
    # The typed address stays, and the settings form shows the saved values.
    assert ("test-recipient", "reader at example.org") in read_form(response.text, TEST_FORM).values
    assert ("server", "smtp.example.com:587") in read_form(response.text).values


def test_test_email_names_unreachable_server(logged_in, services) -> None:
    # Nothing listens on port 9 of the loopback address.
    changes = password_fields(server="127.0.0.1:9", connection_type="ssl")
    assert submit(logged_in, EDIT, changes).status_code == 302
    response = send_test(logged_in, EDIT, TEST, RECIPIENT)
    assert (
        f"The test e-mail to {RECIPIENT} was not sent: Nothing accepts connections at "
        "127.0.0.1:9; check the SMTP Server and port"
    ) in response.text


# Access -------------------------------------------------------------------------------


def test_posts_without_csrf_are_rejected(logged_in, services) -> None:
    assert logged_in.post(EDIT, data=password_fields(save="Save")).status_code == 400
    response = logged_in.post(TEST, data={"test-recipient": RECIPIENT, "test-send": "Test"})
    assert response.status_code == 400
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(SmtpSettings.id))) == 0


def test_non_admin_is_forbidden(user_client) -> None:
    assert user_client.get(EDIT).status_code == 403
    token = csrf_token(user_client, "/")
    data = {"csrf_token": token, **password_fields(save="Save")}
    assert user_client.post(EDIT, data=data).status_code == 403
    data = {"test-csrf_token": token, "test-recipient": RECIPIENT, "test-send": "Test"}
    assert user_client.post(TEST, data=data).status_code == 403


def test_anonymous_is_sent_to_login(app) -> None:
    anonymous = app.test_client()
    for url in (EDIT, "/configuration/general/settings"):
        response = anonymous.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next="), url


# Test e-mail through Dovecot -------------------------------------------------------------


def wait_for_message(stack: MailStack, recipient: str, timeout: float = 10.0) -> Received:
    """Return the message the sink received for ``recipient``, waiting for the relay."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received in list(stack.sink.messages):
            if recipient in received.rcpt_tos:
                return received
        time.sleep(0.05)
    raise AssertionError(f"the SMTP sink received nothing for {recipient} within {timeout:g} s")


def dovecot_password_fields(stack: MailStack, **changes: Any) -> dict[str, Any]:
    values = password_fields(
        server=f"127.0.0.1:{stack.dovecot.submission_port}",
        email_address=PASSWORD_USER,
        connection_type="tls",
        login=PASSWORD_USER,
        password=PASSWORD_USER_PASSWORD,
    )
    values.update(changes)
    return values


def assert_test_message(received: Received, sender: str, recipient: str) -> None:
    assert received.mail_from == sender
    assert received.rcpt_tos == [recipient]
    message = received.message
    assert message["From"] == sender
    assert message["To"] == recipient
    assert message["Reply-To"] == ADMIN_EMAIL
    assert message["Subject"] == "Mailroom test e-mail"
    body = message.get_content()
    assert "This is a test e-mail from Mailroom." in body
    assert f"at the request of {ADMIN_EMAIL}" in body


def test_test_email_password_starttls(logged_in, mail_stack: MailStack) -> None:
    mail_stack.sink.clear()
    assert submit(logged_in, EDIT, dovecot_password_fields(mail_stack)).status_code == 302
    recipient = "starttls-reader@example.org"
    response = send_test(logged_in, EDIT, TEST, recipient)
    assert response.request.path == EDIT
    assert f"Test e-mail sent to {recipient}." in response.text
    received = wait_for_message(mail_stack, recipient)
    assert_test_message(received, PASSWORD_USER, recipient)
    assert f"127.0.0.1:{mail_stack.dovecot.submission_port} (Connection Type TLS" in (
        received.message.get_content()
    )


def test_test_email_password_implicit_tls(logged_in, mail_stack: MailStack) -> None:
    mail_stack.sink.clear()
    changes = dovecot_password_fields(
        mail_stack, server=f"127.0.0.1:{mail_stack.dovecot.submissions_port}", connection_type="ssl"
    )
    assert submit(logged_in, EDIT, changes).status_code == 302
    recipient = "ssl-reader@example.org"
    response = send_test(logged_in, EDIT, TEST, recipient)
    assert f"Test e-mail sent to {recipient}." in response.text
    assert_test_message(wait_for_message(mail_stack, recipient), PASSWORD_USER, recipient)


def test_test_email_wrong_password(logged_in, mail_stack: MailStack) -> None:
    mail_stack.sink.clear()
    changes = dovecot_password_fields(mail_stack, password="not the password")
    assert submit(logged_in, EDIT, changes).status_code == 302
    response = send_test(logged_in, EDIT, TEST, "nobody@example.org")
    assert response.status_code == 200
    assert (
        f"The test e-mail to nobody@example.org was not sent: The server rejected the login "
        f"&#39;{PASSWORD_USER}&#39; (535 "
    ) in response.text
    assert "check the login and password, or generate a new token." in response.text
    assert "not the password" not in response.text
    assert list(mail_stack.sink.messages) == []


def test_test_email_wrong_connection_type(logged_in, mail_stack: MailStack) -> None:
    # The submissions port expects TLS from the first byte, so a STARTTLS client gets no greeting.
    changes = dovecot_password_fields(
        mail_stack, server=f"127.0.0.1:{mail_stack.dovecot.submission_port}", connection_type="ssl"
    )
    assert submit(logged_in, EDIT, changes).status_code == 302
    response = send_test(logged_in, EDIT, TEST, "nobody@example.org")
    assert "does not speak implicit TLS" in response.text
    assert "choose Connection Type TLS for a STARTTLS port such as 587" in response.text


def test_test_email_oauth2_after_consent(logged_in, services, mail_stack: MailStack) -> None:
    """Save OAuth2 settings, give consent through the pages, then send with XOAUTH2."""
    mail_stack.sink.clear()
    changes = oauth_fields(
        server=f"127.0.0.1:{mail_stack.dovecot.submissions_port}",
        connection_type="ssl",
        email_address=MAILBOX_USER,
        oauth_client_id=OAUTH_CLIENT_ID,
        oauth_client_secret=OAUTH_CLIENT_SECRET,
    )
    response = submit(logged_in, EDIT, changes, button="generate_token")
    assert response.status_code == 302
    callback = urlsplit(give_consent(response.headers["Location"], MAILBOX_USER, MAILBOX_PASSWORD))
    answer = logged_in.get(f"{callback.path}?{callback.query}", follow_redirects=True)
    assert answer.request.path == EDIT
    assert f"OAuth2 Token was generated for {MAILBOX_USER}." in answer.text
    assert ACTIVE_TOKEN in answer.text
    assert ACTIVE_TOKEN in logged_in.get(EDIT).text

    recipient = "oauth-reader@example.org"
    response = send_test(logged_in, EDIT, TEST, recipient)
    assert f"Test e-mail sent to {recipient}." in response.text
    assert_test_message(wait_for_message(mail_stack, recipient), MAILBOX_USER, recipient)


# In a browser ----------------------------------------------------------------------------


def test_page_in_browser(live_url, browser_page, services) -> None:
    page = browser_page
    page.goto(f"{live_url}{EDIT}")

    # OAuth2 is the default: its section shows, the password does not.
    assert page.locator("#password").is_hidden()
    assert page.get_by_label("Client Id").is_visible()
    page.get_by_role("radio", name="Password").check()
    assert page.get_by_label("Login").is_visible()
    assert page.locator("#password").is_visible()
    assert page.get_by_label("Client Id").is_hidden()
    assert page.get_by_role("button", name="Generate new token").is_hidden()
    page.get_by_role("radio", name="None").check()
    assert page.get_by_label("Login").is_hidden()
    assert page.get_by_label("Client Id").is_hidden()
    page.get_by_role("radio", name="Password").check()

    # Nothing listens on port 9 of the loopback address.
    page.get_by_label("SMTP Server").fill("127.0.0.1:9")
    page.get_by_label("E-mail Address").fill("office@example.com")
    page.get_by_label("Connection Type").select_option("ssl")
    page.locator("#password").fill(SMTP_PASSWORD)
    page.get_by_role("button", name="Save").click()
    page.get_by_text("The e-mail settings were saved.").wait_for()
    assert SMTP_PASSWORD not in page.content()

    # Test posts its own form, so the SMTP Server typed next is neither saved nor used.
    page.get_by_label("SMTP Server").fill("unsaved.example.com:587")
    page.get_by_label("Send Test E-mail to").fill(RECIPIENT)
    page.get_by_role("button", name="Test").click()
    page.get_by_text(f"The test e-mail to {RECIPIENT} was not sent").wait_for()
    assert "Nothing accepts connections at 127.0.0.1:9" in page.content()
    assert company_row(services).host == "127.0.0.1"
