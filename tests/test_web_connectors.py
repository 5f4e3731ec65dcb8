"""Smart Connector pages: the form's checks, saving, secrets, tokens, runs, delete, export.

Page tests read the rendered form the way a browser does, change some fields
and post it back, so a renamed or missing input fails here.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis as redis_lib
import sqlalchemy as sa
import yaml
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict
from werkzeug.serving import make_server

from celery_config import SCANS_QUEUE
from config import Settings
from intake.definition import export_connector
from models import (
    AuthMethod,
    BudgetCode,
    Client,
    Connector,
    ConnectorRun,
    Job,
    JobKind,
    Language,
    MailAccount,
    MessageFailure,
    OAuthState,
    ProcessedMessage,
    RunProblem,
    RunStatus,
    TokenStatus,
    User,
)
from referencedata import seed
from web.connector_forms import ConnectorForm, FormContext
from web.security import hash_password

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, make_settings

BASE = "/configuration/integration/smart-connectors"
NEW = f"{BASE}/new"
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
MAILBOX_PASSWORD = "pw-Zq8sV3-never-in-html"
CLIENT_SECRET = "secret-Hk41x-never-in-html"
USER_PASSWORD = "a user password of some length"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path, redis_url, oauth_providers=LOCAL_PROVIDER)


# Reading pages ----------------------------------------------------------------


class FormReader(HTMLParser):
    """Collect what a browser would submit from one form, and the error texts."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.in_form = False
        self.values: list[tuple[str, str]] = []
        self.select: tuple[str, bool] | None = None  # name, multiple
        self.select_options: list[tuple[str, bool]] = []
        self.option_value: str | None = None
        self.option_text = ""
        self.error_id: str | None = None
        self.error_depth = 0
        self.errors: dict[str, list[str]] = {}
        self.error_text = ""
        self.textarea: str | None = None  # name of the text area being read
        self.textarea_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form" and attributes.get("id") == self.form_id:
            self.in_form = True
        if not self.in_form:
            return
        self._start_error(tag, attributes)
        if tag == "input":
            self._read_input(attributes)
        elif tag == "select":
            self.select = (attributes["name"], "multiple" in attributes)
            self.select_options = []
        elif tag == "option" and self.select is not None:
            self.option_value = attributes.get("value")
            self.option_text = ""
            self.select_options.append((attributes.get("value", ""), "selected" in attributes))
        elif tag == "textarea":
            self.textarea = attributes["name"]
            self.textarea_text = ""

    def handle_data(self, data: str) -> None:
        if self.error_id is not None:
            self.error_text += data
        if self.textarea is not None:
            self.textarea_text += data

    def handle_endtag(self, tag: str) -> None:
        if not self.in_form:
            return
        if self.error_id is not None and tag == "div":
            self._end_error_div()
        if tag == "select" and self.select is not None:
            self._finish_select()
        elif tag == "textarea" and self.textarea is not None:
            # A browser drops one line break right after <textarea>, as HTML parsing does.
            text = self.textarea_text
            text = text[2:] if text.startswith("\r\n") else text.removeprefix("\n")
            self.values.append((self.textarea, text))
            self.textarea = None
        elif tag == "form":
            self.in_form = False

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

    def _start_error(self, tag: str, attributes: dict[str, str]) -> None:
        element_id = attributes.get("id", "")
        if tag == "div" and element_id.endswith("-error"):
            self.error_id = element_id.removesuffix("-error")
            self.error_depth = 0
            self.errors[self.error_id] = []
        elif tag == "div" and self.error_id is not None:
            self.error_depth += 1
            self.error_text = ""

    def _end_error_div(self) -> None:
        assert self.error_id is not None
        if self.error_depth == 0:
            self.error_id = None
            return
        self.errors[self.error_id].append(self.error_text.strip())
        self.error_depth -= 1


def read_form(html: str, form_id: str = "connector-form") -> FormReader:
    reader = FormReader(form_id)
    reader.feed(html)
    assert reader.values, f"no form #{form_id} in the page"
    return reader


def fill(html: str, changes: dict[str, str | list[str]]) -> MultiDict[str, str]:
    """Return the form's current values with ``changes`` applied, ready to post."""
    values = MultiDict(read_form(html).values)
    for name, value in changes.items():
        values.setlist(name, value if isinstance(value, list) else [value])
    return values


def submit(client: FlaskClient, url: str, changes: dict[str, Any], button: str = "save") -> Any:
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    values = fill(page.text, changes)
    for name, value in list(values.items()):
        if value is None:
            values.pop(name)
    values[button] = "Save" if button == "save" else "Generate new token"
    return client.post(url, data=values)


# Data -----------------------------------------------------------------------


def reference_ids(services: Any) -> dict[str, str]:
    with services.db.session() as session:
        clients = {c.name: str(c.id) for c in session.scalars(sa.select(Client))}
        languages = {
            language.code: str(language.id)
            for language in session.scalars(
                sa.select(Language).where(Language.code.in_(["en", "de", "fr"]))
            )
        }
    return {
        "acme": clients["Acme Pharma Ltd"],
        "borealis": clients["Borealis Legal"],
        **languages,
    }


def password_fields(ids: dict[str, str], **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "job_kind": "project",
        "name": "Acme orders",
        "active": "y",
        "client": ids["acme"],
        "budget_code": "AP-REG",
        "aggregation": "batch",
        "files_location": "email",
        "auth_method": "password",
        "provider": "",
        "host": "imap.example.com",
        "port": "993",
        "use_ssl": "y",
        "username": "orders@example.com",
        "password": MAILBOX_PASSWORD,
        "folder": "INBOX/Orders",
        "source_language": ids["en"],
        "target_languages": [ids["de"], ids["fr"]],
        "interval_minutes": "15",
    }
    values.update(changes)
    return values


def oauth_fields(ids: dict[str, str], **changes: Any) -> dict[str, Any]:
    values = password_fields(
        ids,
        name="Acme quotes",
        job_kind="quote",
        auth_method="oauth2",
        provider="local",
        password="",
        username="Quotes@Example.com",
        oauth_client_id="mailroom-app",
        oauth_client_secret=CLIENT_SECRET,
    )
    values.update(changes)
    return values


def connector_named(services: Any, name: str) -> Connector:
    with services.db.session() as session:
        connector = session.scalars(sa.select(Connector).where(Connector.name == name)).one()
        session.expunge(connector)
        return connector


def log_in(client: FlaskClient, email: str, password: str) -> FlaskClient:
    token = csrf_token(client, "/login")
    response = client.post(
        "/login", data={"csrf_token": token, "email": email, "password": password}
    )
    assert response.status_code == 302, response.text
    return client


@pytest.fixture
def ids(services: Any) -> dict[str, str]:
    """Seed languages, services and specializations, and add two clients with budget codes."""
    with services.db.session() as session:
        seed(session, samples=False)
        session.add(
            Client(
                name="Acme Pharma Ltd",
                budget_codes=[BudgetCode(code="AP-REG"), BudgetCode(code="AP-2026")],
            )
        )
        session.add(Client(name="Borealis Legal", budget_codes=[BudgetCode(code="BL-LIT")]))
        session.commit()
    return reference_ids(services)


@pytest.fixture
def user_client(app: Flask, services: Any) -> FlaskClient:
    """A logged-in user who is not an admin."""
    with services.db.session() as session:
        session.add(
            User(
                email="user@mailroom.test",
                name="User",
                password_hash=hash_password(USER_PASSWORD),
            )
        )
        session.commit()
    return log_in(app.test_client(), "user@mailroom.test", USER_PASSWORD)


@pytest.fixture
def saved_password_connector(logged_in: FlaskClient, services: Any, ids: dict[str, str]) -> int:
    response = submit(logged_in, NEW, password_fields(ids))
    assert response.status_code == 302, read_form(response.text).errors
    return connector_named(services, "Acme orders").id


@pytest.fixture
def saved_oauth_connector(logged_in: FlaskClient, services: Any, ids: dict[str, str]) -> int:
    response = submit(logged_in, NEW, oauth_fields(ids))
    assert response.status_code == 302, read_form(response.text).errors
    return connector_named(services, "Acme quotes").id


# Form unit tests ------------------------------------------------------------


def validate_form(
    app: Flask, services: Any, data: dict[str, Any], connector: Connector | None = None
) -> ConnectorForm:
    values: MultiDict[str, Any] = MultiDict()
    for name, value in data.items():
        values.setlist(name, value if isinstance(value, list) else [value])
    with app.test_request_context(method="POST", data=values), services.db.session() as session:
        form = ConnectorForm(
            FormContext(session, services.providers, connector), meta={"csrf": False}
        )
        form.validate()
        return form


def test_form_accepts_password_connector(app, services, ids) -> None:
    form = validate_form(app, services, password_fields(ids))
    assert form.errors == {}
    assert form.rows.client is not None
    assert form.rows.client.name == "Acme Pharma Ltd"
    assert [language.code for language in form.rows.target_languages] == ["de", "fr"]


def test_form_accepts_oauth_connector(app, services, ids) -> None:
    form = validate_form(app, services, oauth_fields(ids))
    assert form.errors == {}
    assert form.rows.account is None  # no account yet for this provider and address


def test_form_empty_folder_means_inbox(app, services, ids) -> None:
    form = validate_form(app, services, password_fields(ids, folder="  "))
    assert form.errors == {}
    assert form.folder.data == "INBOX"


BAD_INPUTS = [
    ("port", "0", "Port 0 is out of range; enter a port from 1 to 65535 (993 with Use SSL, "
     "143 without)."),
    ("port", "65536", "Port 65536 is out of range; enter a port from 1 to 65535 (993 with "
     "Use SSL, 143 without)."),
    ("port", "imap", 'Port "imap" is not a number; enter a port from 1 to 65535.'),
    ("port", "", "Port is missing; enter a port from 1 to 65535, usually 993."),
    ("interval_minutes", "0", "Schedule 0 minutes is out of range; enter 1 to 10080 minutes "
     "(10080 minutes is one week)."),
    ("interval_minutes", "10081", "Schedule 10081 minutes is out of range; enter 1 to 10080 "
     "minutes (10080 minutes is one week)."),
    ("interval_minutes", "often", 'Schedule "often" is not a number; enter whole minutes from '
     "1 to 10080."),
    ("name", " ", "Name is missing; enter a name for this Smart Connector."),
    ("name", "x" * 201, "Name has 201 characters; shorten it to at most 200."),
    ("host", "", "Host Name is missing; enter the IMAP server name, e.g. imap.example.com."),
    ("host", "imaps://imap.example.com", 'Host Name "imaps://imap.example.com" is not a server '
     'name; enter only the name or IP address, e.g. imap.example.com, without "imaps://", a '
     "path or a port."),
    ("username", "", "Username is missing; enter the mailbox login, usually its e-mail address."),
    ("client", "", "Client is missing; choose the client the jobs are for."),
    ("client", "999", 'Client "999" does not exist; choose a client from the list.'),
    ("budget_code", "NOPE", 'Budget code "NOPE" is not a code of Acme Pharma Ltd; choose '
     "one of AP-2026, AP-REG or leave it empty."),
    ("budget_code", "BL-LIT", 'Budget code "BL-LIT" is not a code of Acme Pharma Ltd; '
     "choose one of AP-2026, AP-REG or leave it empty."),
    ("job_kind", "invoice", 'Project or Quote "invoice" is not valid; choose Project or Quote.'),
    ("aggregation", "zip", 'Files Aggregation "zip" is not valid; choose Process every top '
     "level file separately, Process every e-mail separately or Process files in batches."),
    (
        "files_location",
        "imap",
        'Files location "imap" is not valid; choose E-mail, Folder under the file store, '
        "FTP or SFTP.",
    ),
    ("auth_method", "kerberos", 'Authorization method "kerberos" is not valid; choose OAuth2 or '
     "Password."),
    ("person_responsible", "999", 'Person Responsible "999" does not exist; choose a user from '
     "the list."),
    ("source_language", "abc", 'Source Language "abc" does not exist; choose a language from '
     "the list."),
    ("target_languages", ["99999"], 'Target language "99999" does not exist; choose languages '
     "from the list."),
    ("service", "99999999999999999999", 'Service "99999999999999999999" does not exist; choose '
     "a service from the list."),
    ("folder", "INBOX\r\nX", 'Folder "INBOX\r\nX" is not a valid folder name; use at most 255 '
     "characters without line breaks, e.g. INBOX."),
    ("password", "", "Password is missing; enter the mailbox password."),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "message"), BAD_INPUTS)
def test_form_rejects_bad_input(app, services, ids, name, value, message) -> None:
    form = validate_form(app, services, password_fields(ids, **{name: value}))
    assert form.errors == {name: [message]}


def test_form_budget_code_client_without_codes(app, services, ids) -> None:
    with services.db.session() as session:
        session.add(Client(name="Plain Client"))
        session.commit()
        plain_id = str(
            session.scalars(sa.select(Client.id).where(Client.name == "Plain Client")).one()
        )
    form = validate_form(app, services, password_fields(ids, client=plain_id, budget_code="X1"))
    assert form.errors == {
        "budget_code": [
            'Budget code "X1" is not a code of Plain Client; Plain Client has no budget codes, '
            "so leave it empty."
        ]
    }


def test_form_rejects_source_among_targets(app, services, ids) -> None:
    data = password_fields(ids, target_languages=[ids["de"], ids["en"]])
    form = validate_form(app, services, data)
    assert form.errors == {
        "target_languages": [
            "Target Languages include the source language English (en); remove it."
        ]
    }


def test_form_rejects_duplicate_name(app, services, ids, saved_password_connector) -> None:
    form = validate_form(app, services, password_fields(ids))
    assert form.errors == {
        "name": [
            'Name "Acme orders" is already used by another Smart Connector; choose another name.'
        ]
    }


def test_form_allows_own_name_on_edit(app, services, ids, saved_password_connector) -> None:
    with services.db.session() as session:
        connector = session.get(Connector, saved_password_connector)
        form = validate_form(app, services, password_fields(ids, password=""), connector)
    assert form.errors == {}


OAUTH_BAD_INPUTS = [
    ({"provider": ""}, "provider",
     "Provider is missing; OAuth2 needs one of: Google, Local, Microsoft 365."),
    ({"provider": "yahoo"}, "provider",
     'Provider "yahoo" is not configured; choose one of: Google, Local, Microsoft 365, or add '
     "it to OAUTH_PROVIDERS."),
    ({"username": "quotes"}, "username",
     'Username "quotes" is not an e-mail address; OAuth2 needs the mailbox\'s address, e.g. '
     "intake@example.com."),
    ({"oauth_client_id": ""}, "oauth_client_id",
     "Client Id is missing; enter the Client Id of the app registered with Local, which a "
     "token needs."),
    ({"oauth_client_secret": ""}, "oauth_client_secret",
     "Client Secret is missing; enter the Client Secret of the app registered with Local."),
    ({"oauth_client_id": "x" * 513}, "oauth_client_id",
     "Client Id has 513 characters; shorten it to at most 512."),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "name", "message"), OAUTH_BAD_INPUTS)
def test_form_rejects_bad_oauth_input(app, services, ids, changes, name, message) -> None:
    form = validate_form(app, services, oauth_fields(ids, **changes))
    assert form.errors == {name: [message]}


def test_form_client_id_missing_when_generating(app, services, ids) -> None:
    data = oauth_fields(ids, oauth_client_id="", generate_token="Generate new token")
    form = validate_form(app, services, data)
    assert form.errors == {
        "oauth_client_id": [
            "Client Id is missing; enter the Client Id of the app registered with Local, "
            "which a token needs."
        ]
    }


def test_form_generate_needs_oauth2(app, services, ids) -> None:
    data = password_fields(ids, generate_token="Generate new token")
    form = validate_form(app, services, data)
    assert form.errors == {
        "auth_method": [
            "Generate new token works only with the OAuth2 authorization method; choose "
            "OAuth2, or click Save to keep Password."
        ]
    }


def test_form_active_token_needs_no_client(app, services, ids, saved_oauth_connector) -> None:
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
        account.client_id = None
        account.client_secret_encrypted = None
        account.token_status = TokenStatus.ACTIVE
        session.commit()
    data = oauth_fields(ids, name="Second", oauth_client_id="", oauth_client_secret="")
    form = validate_form(app, services, data)
    assert form.errors == {}
    assert form.rows.account is not None
    assert form.rows.account.email == "quotes@example.com"


# Creating and editing through the page ---------------------------------------


def test_create_password_connector(logged_in, services, ids) -> None:
    before = datetime.now(UTC)
    response = submit(logged_in, NEW, password_fields(ids))
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Acme orders")
    assert response.headers["Location"] == f"{BASE}/{connector.id}"
    assert connector.job_kind == JobKind.PROJECT
    assert connector.auth_method == AuthMethod.PASSWORD
    assert connector.mail_account_id is None
    assert connector.budget_code == "AP-REG"
    assert connector.folder == "INBOX/Orders"
    assert connector.interval_minutes == 15
    assert services.box.decrypt(connector.password_encrypted) == MAILBOX_PASSWORD
    assert connector.next_run_at is not None
    assert before <= connector.next_run_at <= datetime.now(UTC)

    page = logged_in.get(response.headers["Location"])
    assert 'Smart Connector "Acme orders" was saved.' in page.text.replace("&#34;", '"')
    assert MAILBOX_PASSWORD not in page.text


def test_create_oauth_connector(logged_in, services, ids) -> None:
    response = submit(logged_in, NEW, oauth_fields(ids))
    assert response.status_code == 302, read_form(response.text).errors
    assert CLIENT_SECRET not in response.text
    connector = connector_named(services, "Acme quotes")
    assert connector.auth_method == AuthMethod.OAUTH2
    assert connector.password_encrypted is None
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
    assert connector.mail_account_id == account.id
    assert (account.provider, account.email) == ("local", "quotes@example.com")
    assert account.client_id == "mailroom-app"
    assert services.box.decrypt(account.client_secret_encrypted) == CLIENT_SECRET
    assert account.token_status == TokenStatus.NONE

    page = logged_in.get(response.headers["Location"])
    assert CLIENT_SECRET not in page.text
    assert "No access token yet" in page.text
    assert "Generate new token" in page.text


def test_secrets_absent_from_pages(logged_in, services, ids) -> None:
    submit(logged_in, NEW, password_fields(ids))
    submit(logged_in, NEW, oauth_fields(ids))
    password_id = connector_named(services, "Acme orders").id
    oauth_id = connector_named(services, "Acme quotes").id
    urls = [
        BASE,
        NEW,
        f"{BASE}/{password_id}",
        f"{BASE}/{password_id}/edit",
        f"{BASE}/{password_id}/export",
        f"{BASE}/{oauth_id}",
        f"{BASE}/{oauth_id}/edit",
        f"{BASE}/{oauth_id}/export",
        "/",
    ]
    for url in urls:
        text = logged_in.get(url).text
        assert MAILBOX_PASSWORD not in text, url
        assert CLIENT_SECRET not in text, url


def test_edit_shows_saved_placeholders(logged_in, saved_password_connector) -> None:
    page = logged_in.get(f"{BASE}/{saved_password_connector}/edit")
    assert page.status_code == 200
    assert f'placeholder="{SAVED_PLACEHOLDER}"' in page.text
    assert MAILBOX_PASSWORD not in page.text
    values = dict(read_form(page.text).values)
    assert values["password"] == ""
    assert values["name"] == "Acme orders"
    assert values["budget_code"] == "AP-REG"


def test_edit_shows_client_id_not_secret(logged_in, saved_oauth_connector) -> None:
    page = logged_in.get(f"{BASE}/{saved_oauth_connector}/edit")
    values = dict(read_form(page.text).values)
    assert values["oauth_client_id"] == "mailroom-app"
    assert values["oauth_client_secret"] == ""
    assert page.text.count(f'placeholder="{SAVED_PLACEHOLDER}"') == 1
    assert CLIENT_SECRET not in page.text


def test_empty_password_keeps_saved_one(logged_in, services, saved_password_connector) -> None:
    url = f"{BASE}/{saved_password_connector}/edit"
    response = submit(logged_in, url, {"password": "", "folder": "INBOX"})
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Acme orders")
    assert connector.folder == "INBOX"
    assert services.box.decrypt(connector.password_encrypted) == MAILBOX_PASSWORD

    response = submit(logged_in, url, {"password": "a new password"})
    assert response.status_code == 302
    connector = connector_named(services, "Acme orders")
    assert services.box.decrypt(connector.password_encrypted) == "a new password"


def test_empty_client_secret_keeps_saved_one(logged_in, services, saved_oauth_connector) -> None:
    url = f"{BASE}/{saved_oauth_connector}/edit"
    response = submit(logged_in, url, {"oauth_client_secret": "", "oauth_client_id": ""})
    assert response.status_code == 302, read_form(response.text).errors
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
    assert account.client_id == "mailroom-app"
    assert services.box.decrypt(account.client_secret_encrypted) == CLIENT_SECRET


def test_changed_client_id_needs_new_consent(logged_in, services, saved_oauth_connector) -> None:
    with services.db.session() as session:
        session.scalars(sa.select(MailAccount)).one().token_status = TokenStatus.ACTIVE
        session.commit()
    url = f"{BASE}/{saved_oauth_connector}/edit"
    response = submit(logged_in, url, {"oauth_client_id": "another-app"})
    assert response.status_code == 302
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
    assert account.client_id == "another-app"
    assert account.token_status == TokenStatus.NEEDS_CONSENT
    page = logged_in.get(response.headers["Location"])
    assert "The Client Id changed" in page.text


def test_switch_to_oauth_drops_password(logged_in, services, ids, saved_password_connector) -> None:
    url = f"{BASE}/{saved_password_connector}/edit"
    changes = {
        "auth_method": "oauth2",
        "provider": "google",
        "oauth_client_id": "google-app",
        "oauth_client_secret": CLIENT_SECRET,
    }
    response = submit(logged_in, url, changes)
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Acme orders")
    assert connector.password_encrypted is None
    assert connector.mail_account_id is not None

    # Back to Password: the password must be entered again.
    response = submit(logged_in, url, {"auth_method": "password", "password": ""})
    assert response.status_code == 200
    assert read_form(response.text).errors == {
        "password": ["Password is missing; enter the mailbox password."]
    }


def test_failed_post_keeps_typed_values(logged_in, services, ids) -> None:
    changes = oauth_fields(ids, port="0", budget_code="AP-2026", person_responsible="")
    response = submit(logged_in, NEW, changes)
    assert response.status_code == 200
    assert CLIENT_SECRET not in response.text
    reader = read_form(response.text)
    assert reader.errors == {
        "port": [
            "Port 0 is out of range; enter a port from 1 to 65535 (993 with Use SSL, 143 without)."
        ]
    }
    rendered = MultiDict(reader.values)
    for name, value in changes.items():
        if name in ("password", "oauth_client_secret"):
            assert rendered.get(name) == "", name
        elif isinstance(value, list):
            assert sorted(rendered.getlist(name)) == sorted(value), name
        else:
            assert rendered.get(name) == value, name
    assert "enter the Password or Client Secret again" in response.text
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(Connector.id))) == 0


def test_failed_post_keeps_unknown_budget_code(logged_in, ids) -> None:
    response = submit(logged_in, NEW, password_fields(ids, budget_code="BL-LIT"))
    assert response.status_code == 200
    reader = read_form(response.text)
    assert dict(reader.values)["budget_code"] == "BL-LIT"
    assert reader.errors["budget_code"] == [
        'Budget code "BL-LIT" is not a code of Acme Pharma Ltd; choose one of AP-2026, '
        "AP-REG or leave it empty."
    ]


def test_page_shows_each_error(logged_in, ids) -> None:
    changes = password_fields(
        ids, name="", host="", username="", port="abc", interval_minutes="0", password=""
    )
    response = submit(logged_in, NEW, changes)
    assert response.status_code == 200
    assert read_form(response.text).errors == {
        "name": ["Name is missing; enter a name for this Smart Connector."],
        "host": ["Host Name is missing; enter the IMAP server name, e.g. imap.example.com."],
        "port": ['Port "abc" is not a number; enter a port from 1 to 65535.'],
        "username": ["Username is missing; enter the mailbox login, usually its e-mail address."],
        "password": ["Password is missing; enter the mailbox password."],
        "interval_minutes": [
            "Schedule 0 minutes is out of range; enter 1 to 10080 minutes "
            "(10080 minutes is one week)."
        ],
    }
    assert 'aria-describedby="port-error port-help"' in response.text


def test_page_duplicate_name_error(logged_in, ids, saved_password_connector) -> None:
    response = submit(logged_in, NEW, password_fields(ids))
    assert response.status_code == 200
    assert read_form(response.text).errors == {
        "name": [
            'Name "Acme orders" is already used by another Smart Connector; choose another name.'
        ]
    }


def test_shared_mail_account_and_active_token(logged_in, services, ids) -> None:
    first = submit(logged_in, NEW, oauth_fields(ids))
    assert first.status_code == 302
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
        account.token_status = TokenStatus.ACTIVE
        session.commit()

    # Same provider and address in other letter case, and no Client Id or Secret.
    second_fields = oauth_fields(
        ids,
        name="Acme quotes, second folder",
        username="QUOTES@example.com",
        folder="INBOX/Second",
        oauth_client_id="",
        oauth_client_secret="",
    )
    second = submit(logged_in, NEW, second_fields)
    assert second.status_code == 302, read_form(second.text).errors
    with services.db.session() as session:
        accounts = session.scalars(sa.select(MailAccount)).all()
        connectors = session.scalars(sa.select(Connector).order_by(Connector.id)).all()
    assert len(accounts) == 1
    assert [c.mail_account_id for c in connectors] == [accounts[0].id, accounts[0].id]
    assert accounts[0].client_id == "mailroom-app"

    show = logged_in.get(second.headers["Location"])
    assert ACTIVE_TOKEN in show.text
    assert "Generate new token</button>" not in show.text
    edit = logged_in.get(f"{BASE}/{connectors[1].id}/edit")
    assert ACTIVE_TOKEN in edit.text
    assert "Client Id and Client Secret may stay empty" in edit.text


def test_needs_consent_shows_reason(logged_in, services, saved_oauth_connector) -> None:
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
        account.token_status = TokenStatus.NEEDS_CONSENT
        account.token_status_reason = "Local rejected the stored grant: invalid_grant."
        session.commit()
    page = logged_in.get(f"{BASE}/{saved_oauth_connector}")
    assert "The access token needs new consent: Local rejected the stored grant" in page.text
    assert f'action="{BASE}/{saved_oauth_connector}/token"' in page.text
    edit = logged_in.get(f"{BASE}/{saved_oauth_connector}/edit")
    assert "The access token needs new consent" in edit.text


def test_edit_keeps_next_run_unless_interval_changes(
    logged_in, services, saved_password_connector
) -> None:
    due = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    last = datetime.now(UTC) - timedelta(minutes=2)
    with services.db.session() as session:
        connector = session.get(Connector, saved_password_connector)
        connector.next_run_at = due
        connector.last_run_at = last
        session.commit()
    url = f"{BASE}/{saved_password_connector}/edit"

    assert submit(logged_in, url, {"name": "Renamed"}).status_code == 302
    assert connector_named(services, "Renamed").next_run_at == due

    assert submit(logged_in, url, {"interval_minutes": "60"}).status_code == 302
    connector = connector_named(services, "Renamed")
    assert connector.next_run_at == last + timedelta(minutes=60)

    before = datetime.now(UTC)
    assert submit(logged_in, url, {"interval_minutes": "1"}).status_code == 302
    assert connector_named(services, "Renamed").next_run_at >= before  # overdue: due at once


# Generate new token ------------------------------------------------------------


def assert_authorization_redirect(response: Any, client_id: str, email: str) -> None:
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        "http://127.0.0.1:9/authorize"
    )
    query = parse_qs(location.query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert len(query["state"][0]) >= 32
    assert query["client_id"] == [client_id]
    assert query["response_type"] == ["code"]
    assert query["login_hint"] == [email]
    assert query["redirect_uri"] == ["http://localhost/home-api/authentication/mail/oauth2/code"]


def test_generate_token_from_form(logged_in, services, ids) -> None:
    response = submit(logged_in, NEW, oauth_fields(ids), button="generate_token")
    assert_authorization_redirect(response, "mailroom-app", "quotes@example.com")
    connector = connector_named(services, "Acme quotes")
    with services.db.session() as session:
        state = session.scalars(sa.select(OAuthState)).one()
    assert state.mail_account_id == connector.mail_account_id
    assert state.return_to == f"{BASE}/{connector.id}"


def test_generate_token_from_connector_page(logged_in, saved_oauth_connector) -> None:
    url = f"{BASE}/{saved_oauth_connector}"
    response = logged_in.post(f"{url}/token", data={"csrf_token": csrf_token(logged_in, url)})
    assert_authorization_redirect(response, "mailroom-app", "quotes@example.com")


def test_generate_token_without_client_id(logged_in, services, ids) -> None:
    changes = oauth_fields(ids, oauth_client_id="")
    response = submit(logged_in, NEW, changes, button="generate_token")
    assert response.status_code == 200
    assert read_form(response.text).errors == {
        "oauth_client_id": [
            "Client Id is missing; enter the Client Id of the app registered with Local, "
            "which a token needs."
        ]
    }
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(Connector.id))) == 0


def test_generate_token_for_password_connector(logged_in, saved_password_connector) -> None:
    url = f"{BASE}/{saved_password_connector}"
    response = logged_in.post(
        f"{url}/token", data={"csrf_token": csrf_token(logged_in, url)}, follow_redirects=True
    )
    assert response.request.path == url
    assert "logs in with a password, so it needs no token" in response.text


# Access -------------------------------------------------------------------


def test_post_without_csrf_is_rejected(logged_in, services, ids) -> None:
    data = password_fields(ids, save="Save")
    assert logged_in.post(NEW, data=data).status_code == 400
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(Connector.id))) == 0


def test_button_posts_without_csrf_are_rejected(logged_in, saved_password_connector) -> None:
    for action in ("run", "token", "delete"):
        response = logged_in.post(f"{BASE}/{saved_password_connector}/{action}")
        assert response.status_code == 400, action


def test_non_admin_is_forbidden(user_client, saved_password_connector) -> None:
    connector_url = f"{BASE}/{saved_password_connector}"
    for url in (NEW, f"{connector_url}/edit", f"{connector_url}/delete"):
        assert user_client.get(url).status_code == 403, url
    token = csrf_token(user_client, connector_url)
    for action in ("edit", "run", "token", "delete"):
        response = user_client.post(f"{connector_url}/{action}", data={"csrf_token": token})
        assert response.status_code == 403, action
    # Reading is allowed, without the admin buttons.
    page = user_client.get(connector_url)
    assert page.status_code == 200
    assert "Run now" not in page.text
    listing = user_client.get(BASE)
    assert listing.status_code == 200
    assert "Add Smart Connector" not in listing.text


def test_anonymous_is_sent_to_login(app, saved_password_connector) -> None:
    anonymous = app.test_client()
    connector_url = f"{BASE}/{saved_password_connector}"
    for url in (BASE, NEW, connector_url, f"{connector_url}/edit", f"{connector_url}/export"):
        response = anonymous.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next="), url


# Connector page, run now, delete, export -------------------------------------


def test_run_now_queues_scan(logged_in, services, settings, saved_password_connector) -> None:
    url = f"{BASE}/{saved_password_connector}"
    response = logged_in.post(
        f"{url}/run", data={"csrf_token": csrf_token(logged_in, url)}, follow_redirects=True
    )
    assert response.status_code == 200
    assert "A run of &#34;Acme orders&#34; was queued." in response.text
    queue = redis_lib.Redis.from_url(settings.redis_url)
    messages = queue.lrange(SCANS_QUEUE, 0, -1)
    assert len(messages) == 1
    headers = json.loads(messages[0])["headers"]
    assert headers["task"] == "mailroom.connectors.scan"
    assert headers["argsrepr"] == f"({saved_password_connector}, 'manual')"


def test_page_lists_runs_and_left_emails(logged_in, services, saved_password_connector) -> None:
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    with services.db.session() as session:
        for number in range(25):
            run = ConnectorRun(
                connector_id=saved_password_connector,
                trigger="schedule",
                status=RunStatus.PARTIAL,
                started_at=start + timedelta(minutes=number),
                finished_at=start + timedelta(minutes=number, seconds=30),
                messages_seen=3,
                jobs_created=1,
                messages_deleted=1,
                error="IMAP timed out" if number == 24 else None,
            )
            # The same e-mail is met by every run; another only by the newest.
            run.problems = [
                RunProblem(
                    uid=7,
                    message_id="<same@example.com>",
                    sender="ana@example.com",
                    subject="Offer without files",
                    reason=f"no attachments (run {number})",
                )
            ]
            if number == 24:
                run.problems.append(
                    RunProblem(uid=9, sender="bo@example.com", subject="Huge", reason="too large")
                )
            session.add(run)
        session.commit()

    page = logged_in.get(f"{BASE}/{saved_password_connector}")
    assert page.status_code == 200
    assert page.text.count("<td>schedule</td>") == 20
    assert "2026-03-01 08:24 UTC" in page.text  # newest run
    assert "2026-03-01 08:04 UTC" not in page.text  # older than the last 20
    assert "IMAP timed out" in page.text
    assert page.text.count("Offer without files") == 1
    assert "no attachments (run 24)" in page.text
    assert "too large" in page.text


def test_left_list_drops_settled_messages(logged_in, services, saved_password_connector) -> None:
    with services.db.session() as session:
        run = ConnectorRun(
            connector_id=saved_password_connector,
            trigger="schedule",
            status=RunStatus.PARTIAL,
            started_at=datetime(2026, 3, 1, 8, 0, tzinfo=UTC),
        )
        run.problems = [
            RunProblem(uid=7, message_id="<moved@example.com>", subject="Moved", reason="r1"),
            RunProblem(uid=8, subject="Processed later", reason="r2"),
            RunProblem(uid=9, message_id="<still@example.com>", subject="Still here", reason="r3"),
        ]
        session.add(run)
        session.add(
            MessageFailure(
                connector_id=saved_password_connector,
                uidvalidity=1,
                uid=7,
                message_id="<moved@example.com>",
                attempts=3,
                last_error="r1",
                quarantined_at=datetime(2026, 3, 1, 8, 5, tzinfo=UTC),
                moved_to_folder="Mailroom/Errors",
            )
        )
        session.add(
            ProcessedMessage(
                connector_id=saved_password_connector, uidvalidity=1, uid=8, content_hash="0" * 64
            )
        )
        session.commit()

    page = logged_in.get(f"{BASE}/{saved_password_connector}")
    left = page.text.split("E-mails left in the folder", 1)[1].split('id="quarantine"', 1)[0]
    assert "Still here" in left
    assert "Moved" not in left
    assert "Processed later" not in left
    quarantine = page.text.split('id="quarantine-table"', 1)[1]
    assert '<td class="text-break">Mailroom/Errors</td>' in quarantine


def test_list_shows_last_run_and_next_run(logged_in, services, saved_password_connector) -> None:
    with services.db.session() as session:
        connector = session.get(Connector, saved_password_connector)
        connector.next_run_at = datetime(2030, 5, 6, 7, 8, tzinfo=UTC)
        session.add(
            ConnectorRun(
                connector_id=connector.id,
                trigger="manual",
                status=RunStatus.FAILED,
                started_at=datetime(2026, 2, 3, 4, 5, tzinfo=UTC),
            )
        )
        session.commit()
    page = logged_in.get(BASE)
    assert "Add Smart Connector" in page.text
    row = page.text.split(">Acme orders</a>", 1)[1].split("</tr>", 1)[0]
    assert "Project" in row
    assert "Acme Pharma Ltd" in row
    assert "Yes" in row
    assert "2026-02-03 04:05 UTC" in row
    assert ">failed</span>" in row
    assert "2030-05-06 07:08 UTC" in row


def test_list_pagination(logged_in, services, ids, saved_password_connector) -> None:
    with services.db.session() as session:
        template = session.get(Connector, saved_password_connector)
        for number in range(50):
            session.add(
                Connector(
                    name=f"Connector {number:02d}",
                    client_id=template.client_id,
                    host="imap.example.com",
                    username="x@example.com",
                    auth_method=AuthMethod.PASSWORD,
                )
            )
        session.commit()
    first = logged_in.get(BASE)
    assert "Page 1 of 2" in first.text
    assert first.text.count('<a href="/configuration/integration/smart-connectors/') == 50
    assert ">Acme orders</a>" in first.text  # sorted by name
    assert ">Connector 48</a>" in first.text
    assert ">Connector 49</a>" not in first.text
    second = logged_in.get(f"{BASE}?page=2")
    assert ">Connector 49</a>" in second.text
    assert "Page 2 of 2" in second.text
    assert logged_in.get(f"{BASE}?page=3").status_code == 404


def test_delete_asks_then_deletes(logged_in, services, saved_password_connector) -> None:
    with services.db.session() as session:
        connector = session.get(Connector, saved_password_connector)
        session.add(ConnectorRun(connector_id=connector.id, trigger="manual"))
        session.add(Job(kind=JobKind.PROJECT, name="Kept", client_id=connector.client_id,
                        connector_id=connector.id))  # fmt: skip
        session.commit()
    url = f"{BASE}/{saved_password_connector}/delete"
    show = logged_in.get(f"{BASE}/{saved_password_connector}")
    assert f'href="{url}"' in show.text
    confirm = logged_in.get(url)
    assert confirm.status_code == 200
    assert 'Delete Smart Connector "Acme orders"?' in confirm.text
    assert "Its 1 projects and quotes are kept" in confirm.text
    with services.db.session() as session:
        assert session.get(Connector, saved_password_connector) is not None

    response = logged_in.post(url, data={"csrf_token": csrf_token(logged_in, url)})
    assert response.status_code == 302
    assert response.headers["Location"] == BASE
    with services.db.session() as session:
        assert session.get(Connector, saved_password_connector) is None
        assert session.scalar(sa.select(sa.func.count(ConnectorRun.id))) == 0
        job = session.scalars(sa.select(Job)).one()
        assert job.connector_id is None
    assert logged_in.get(f"{BASE}/{saved_password_connector}").status_code == 404


def test_export_downloads_definition(logged_in, services, saved_oauth_connector) -> None:
    response = logged_in.get(f"{BASE}/{saved_oauth_connector}/export")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/yaml; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        f"attachment; filename=smart-connector-{saved_oauth_connector}.yaml"
    )
    with services.db.session() as session:
        expected = export_connector(session.get(Connector, saved_oauth_connector))
    assert yaml.safe_load(response.text) == expected
    assert expected["source"]["provider"] == "local"
    assert CLIENT_SECRET not in response.text


def test_unknown_connector_is_404(logged_in) -> None:
    for url in (f"{BASE}/999", f"{BASE}/999/edit", f"{BASE}/999/export", f"{BASE}/999/delete"):
        assert logged_in.get(url).status_code == 404, url


def test_form_page_has_labels_and_script(logged_in, ids) -> None:
    page = logged_in.get(NEW)
    text = page.text
    for label in (
        "Project or Quote", "Name", "Active", "Client", "Budget Code", "Files Aggregation",
        "Process every top level file separately", "Process files in batches",
        "Scan for Input Files", "Files location", "Authorization method", "OAuth2", "Password",
        "Host Name", "Port", "Use SSL", "Username", "Folder", "Client Id", "Client Secret",
        "Person Responsible", "Schedule", "Save", "Generate new token",
    ):  # fmt: skip
        assert label in text, label
    inputs = ["name", "client", "budget_code", "host", "port", "username", "password", "folder"]
    inputs += ["oauth_client_id", "oauth_client_secret", "interval_minutes"]
    for field in inputs:
        assert f'for="{field}"' in text, field
    assert "STARTTLS" in text
    assert '<option selected value="email">E-mail</option>' in text
    assert 'data-client-search="/api/clients"' in text
    assert 'src="/static/mailroom.js"' in text
    assert "cdn" not in text.lower()
    with logged_in.get("/static/mailroom.js") as script:
        assert script.status_code == 200
        assert b"/api/clients" not in script.data  # the URL comes from the page


# In a browser ------------------------------------------------------------------


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
def browser_page(live_url: str) -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary on PATH for the browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        # Everything must come from the app itself: no CDN, no other host.
        outside: list[str] = []

        def only_loopback(route: Any) -> None:
            if route.request.url.startswith(live_url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_loopback)
        page.set_default_timeout(10_000)
        yield page
        browser.close()
        assert outside == []


def test_form_scripts_in_browser(live_url, browser_page, admin, services, ids) -> None:
    page = browser_page
    page.goto(f"{live_url}/login")
    page.get_by_label("E-mail Address").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_url}{NEW}")

    # OAuth2 is the default: its fields show, the password does not.
    assert page.locator("#password").is_hidden()
    assert page.locator("#oauth_client_id").is_visible()
    page.get_by_role("radio", name="Password").check()
    assert page.locator("#password").is_visible()
    assert page.locator("#oauth_client_id").is_hidden()
    assert page.locator("#provider").is_hidden()
    page.get_by_role("radio", name="OAuth2").check()
    assert page.locator("#password").is_hidden()

    # The provider fills Host Name while it is empty.
    page.get_by_label("Provider").select_option("google")
    # The store sections have their own Host Name, so the mailbox's is found by id.
    assert page.locator("#host").input_value() == "imap.gmail.com"

    # The client select became a search box; the select itself is hidden.
    assert page.locator("select#client").is_hidden()
    search = page.get_by_label("Client", exact=True)
    search.fill("bore")
    page.get_by_role("option", name="Borealis Legal").click()
    assert search.input_value() == "Borealis Legal"
    assert page.locator("select#client").input_value() == ids["borealis"]
    page.wait_for_function("document.querySelectorAll('#budget_code option').length === 2")
    options = page.locator("#budget_code option").all_text_contents()
    assert options == ["No budget code", "BL-LIT"]
    page.get_by_label("Budget Code").select_option("BL-LIT")

    # The keyboard works too: arrow down and Enter pick the first match.
    search.fill("acme")
    page.get_by_role("option", name="Acme Pharma Ltd").wait_for()
    search.press("Enter")
    assert page.locator("select#client").input_value() == ids["acme"]
    page.wait_for_function("document.querySelectorAll('#budget_code option').length === 3")
    assert page.get_by_label("Budget Code").input_value() == ""
    page.get_by_label("Budget Code").select_option("AP-2026")

    page.get_by_label("Name", exact=True).fill("From the browser")
    page.locator("#username").fill("intake@example.com")
    page.get_by_label("Client Id").fill("browser-app")
    page.get_by_label("Client Secret").fill(CLIENT_SECRET)
    page.get_by_role("button", name="Save").click()
    page.get_by_text('Smart Connector "From the browser" was saved.').wait_for()
    assert CLIENT_SECRET not in page.content()

    connector = connector_named(services, "From the browser")
    assert str(connector.client_id) == ids["acme"]
    assert connector.budget_code == "AP-2026"
    assert connector.host == "imap.gmail.com"
    with services.db.session() as session:
        account = session.get(MailAccount, connector.mail_account_id)
    assert (account.provider, account.email, account.client_id) == (
        "google",
        "intake@example.com",
        "browser-app",
    )


def test_concurrent_duplicate_name(logged_in, ids, saved_password_connector, monkeypatch) -> None:
    """A name taken between the check and the commit gets the same field error."""
    monkeypatch.setattr(ConnectorForm, "validate_name", lambda form, field: None)
    response = submit(logged_in, NEW, password_fields(ids))
    assert response.status_code == 200
    assert read_form(response.text).errors == {
        "name": [
            'Name "Acme orders" is already used by another Smart Connector; choose another name.'
        ]
    }


def test_next_run_waits_for_a_token(logged_in, services, saved_oauth_connector) -> None:
    page = logged_in.get(f"{BASE}/{saved_oauth_connector}")
    next_run = page.text.split('id="next-run">', 1)[1].split("</dd>", 1)[0]
    assert "waiting for a token: click Generate new token" in next_run
    assert "waiting for a token" in logged_in.get(BASE).text
    assert "waiting for a token" in logged_in.get("/").text

    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
        account.token_status = TokenStatus.ACTIVE
        session.commit()
    page = logged_in.get(f"{BASE}/{saved_oauth_connector}")
    assert "waiting for a token" not in page.text
    assert "<time datetime=" in page.text.split('id="next-run">', 1)[1].split("</dd>", 1)[0]
