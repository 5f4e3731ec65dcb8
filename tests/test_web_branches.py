"""Branch pages: list, add, edit, clients, the branch's own SMTP server and its test e-mail."""

from __future__ import annotations

import html
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from models import Branch, Client, MailAccount, OAuthState, SmtpAuthMethod, SmtpSettings
from outgoing.mailer import settings_for_branch
from web.email_forms import BranchForm

from . import test_web_email_settings as email_pages
from .conftest import csrf_token
from .servers import PASSWORD_USER, PASSWORD_USER_PASSWORD, MailStack
from .test_web_email_settings import (
    CLIENT_SECRET,
    RECIPIENT,
    SMTP_PASSWORD,
    TEST_FORM,
    assert_authorization_redirect,
    assert_test_message,
    read_form,
    send_test,
    submit,
    wait_for_message,
)

# The same app, settings, users and browser as the company's E-mail page tests.
settings = email_pages.settings
app = email_pages.app
user_client = email_pages.user_client
live_url = email_pages.live_url
browser_page = email_pages.browser_page

BASE = "/configuration/branches"
NEW = f"{BASE}/new"
BRANCH_FORM = "branch-form"


def branch_fields(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "Prague",
        "clients": [],
        "use_own_smtp": None,
        "auth_method": "password",
        "server": "",
        "email_address": "",
        "connection_type": "tls",
        "login": "",
        "password": "",
        "provider": "",
        "oauth_client_id": "",
        "oauth_client_secret": "",
    }
    values.update(changes)
    return values


def own_smtp_fields(**changes: Any) -> dict[str, Any]:
    values = branch_fields(
        use_own_smtp="y",
        server="smtp.prague.example.com:587",
        email_address="prague@example.com",
        login="prague",
        password=SMTP_PASSWORD,
    )
    values.update(changes)
    return values


def save_branch(client: FlaskClient, url: str, changes: dict[str, Any], **kwargs: Any) -> Any:
    return submit(client, url, changes, form_id=BRANCH_FORM, **kwargs)


def branch_named(services: Any, name: str) -> Branch:
    with services.db.session() as session:
        branch = session.scalars(sa.select(Branch).where(Branch.name == name)).one()
        if branch.smtp is not None:
            session.expunge(branch.smtp)
        session.expunge(branch)
        return branch


def smtp_of(services: Any, name: str) -> SmtpSettings:
    smtp = branch_named(services, name).smtp
    assert smtp is not None, f"branch {name} has no SMTP settings"
    return smtp


def client_branches(services: Any) -> dict[str, int | None]:
    with services.db.session() as session:
        return dict(session.execute(sa.select(Client.name, Client.branch_id)).all())


def errors_of(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code
    return read_form(response.text, BRANCH_FORM).errors


@pytest.fixture
def client_ids(services: Any) -> dict[str, str]:
    with services.db.session() as session:
        for name in ("Acme Pharma Ltd", "Borealis Legal", "Cobalt Media"):
            session.add(Client(name=name))
        session.commit()
        return {name: str(client_id) for client_id, name in session.execute(
            sa.select(Client.id, Client.name))}  # fmt: skip


@pytest.fixture
def prague(logged_in: FlaskClient, services: Any, client_ids: dict[str, str]) -> int:
    changes = own_smtp_fields(clients=[client_ids["Acme Pharma Ltd"]])
    response = save_branch(logged_in, NEW, changes)
    assert response.status_code == 302, errors_of(response)
    return branch_named(services, "Prague").id


def edit_url(branch_id: int) -> str:
    return f"{BASE}/{branch_id}/edit"


# List and add -------------------------------------------------------------------------


def test_list_without_branches(logged_in) -> None:
    page = logged_in.get(BASE)
    assert page.status_code == 200
    assert "No branches yet." in page.text
    assert f'href="{NEW}"' in page.text


def test_add_branch_with_clients(logged_in, services, client_ids) -> None:
    changes = branch_fields(clients=[client_ids["Acme Pharma Ltd"], client_ids["Cobalt Media"]])
    response = save_branch(logged_in, NEW, changes)
    assert response.status_code == 302, errors_of(response)
    branch = branch_named(services, "Prague")
    assert response.headers["Location"] == edit_url(branch.id)
    assert not branch.use_own_smtp
    assert client_branches(services) == {
        "Acme Pharma Ltd": branch.id,
        "Borealis Legal": None,
        "Cobalt Media": branch.id,
    }
    page = logged_in.get(BASE).text
    assert f'<a href="{edit_url(branch.id)}">Prague</a>' in page
    assert "<td>2</td>" in page
    assert "The company's SMTP server" in page


def test_add_page_has_tabs_and_labels(logged_in, client_ids) -> None:
    page = logged_in.get(NEW).text
    for label in (
        "General", "E-mail", "Name", "Clients", "Use Own SMTP Server", "Authorization method",
        "SMTP Server", "E-mail Address", "Connection Type", "Login", "Password",
        "OAuth2 Configuration", "Client Id", "Client Secret", "Save", "Generate new token",
    ):  # fmt: skip
        assert label in page, label
    for field in ("name", "clients", "use_own_smtp", "server", "email_address", "password"):
        assert f'for="{field}"' in page, field
    assert 'id="general-tab" href="/configuration/branches/new?tab=general"' in page
    assert "Save the branch first; then you can send a test e-mail" in page
    assert f'id="{TEST_FORM}"' not in page


def test_email_tab_opens_from_query(logged_in, prague) -> None:
    general = logged_in.get(edit_url(prague)).text
    assert 'class="tab-pane show active" id="general-pane"' in general
    email = logged_in.get(f"{edit_url(prague)}?tab=email").text
    assert 'class="tab-pane show active" id="email-pane"' in email
    assert 'class="tab-pane" id="general-pane"' in email


def test_name_is_required_and_unique(logged_in, prague) -> None:
    response = save_branch(logged_in, NEW, branch_fields(name=""))
    assert errors_of(response) == {"name": ["Name is missing; enter the name of the branch."]}
    response = save_branch(logged_in, NEW, branch_fields(name="Prague"))
    assert errors_of(response) == {
        "name": ['Name "Prague" is already used by another branch; choose another name.']
    }
    assert 'class="tab-pane show active" id="general-pane"' in response.text


def test_unknown_client_is_rejected(logged_in, client_ids) -> None:
    response = save_branch(logged_in, NEW, branch_fields(clients=["999"]))
    assert errors_of(response) == {
        "clients": ['Client "999" does not exist; choose clients from the list.']
    }


# Edit ------------------------------------------------------------------------------------


def test_edit_moves_clients(logged_in, services, client_ids, prague) -> None:
    changes = branch_fields(name="Brno", clients=[client_ids["Borealis Legal"]])
    response = save_branch(logged_in, NEW, changes)
    assert response.status_code == 302, errors_of(response)
    brno = branch_named(services, "Brno").id

    # On Prague's page, a client of another branch shows that branch's name.
    page = logged_in.get(edit_url(prague)).text
    assert "Borealis Legal (now in Brno)" in page
    assert "Acme Pharma Ltd (now in" not in page

    changes = {"name": "Praha", "clients": [client_ids["Borealis Legal"]]}
    response = save_branch(logged_in, edit_url(prague), changes)
    assert response.status_code == 302, errors_of(response)
    assert branch_named(services, "Praha").id == prague
    assert client_branches(services) == {
        "Acme Pharma Ltd": None,
        "Borealis Legal": prague,
        "Cobalt Media": None,
    }
    assert brno != prague


def test_edit_shows_saved_values(logged_in, client_ids, prague) -> None:
    values = read_form(logged_in.get(edit_url(prague)).text, BRANCH_FORM).values
    assert ("name", "Prague") in values
    assert ("clients", client_ids["Acme Pharma Ltd"]) in values
    assert ("use_own_smtp", "y") in values
    assert ("server", "smtp.prague.example.com:587") in values
    assert ("email_address", "prague@example.com") in values
    assert ("password", "") in values


def test_use_own_smtp_server_saved(logged_in, services, prague) -> None:
    branch = branch_named(services, "Prague")
    assert branch.use_own_smtp
    smtp = smtp_of(services, "Prague")
    assert smtp.auth_method == SmtpAuthMethod.PASSWORD
    assert (smtp.host, smtp.port) == ("smtp.prague.example.com", 587)
    assert services.box.decrypt(smtp.password_encrypted) == SMTP_PASSWORD
    with services.db.session() as session:
        chosen = settings_for_branch(session, prague)
        assert chosen is not None
        assert chosen.id == smtp.id
    listing = logged_in.get(BASE).text
    assert "Own SMTP Server smtp.prague.example.com:587" in listing

    # Unchecking keeps the server but sends through the company's again.
    response = save_branch(logged_in, edit_url(prague), {"use_own_smtp": None})
    assert response.status_code == 302, errors_of(response)
    branch = branch_named(services, "Prague")
    assert not branch.use_own_smtp
    assert smtp_of(services, "Prague").host == "smtp.prague.example.com"
    with services.db.session() as session:
        assert settings_for_branch(session, prague) is None  # no company settings yet


def test_own_smtp_needs_server(logged_in, services) -> None:
    response = save_branch(logged_in, NEW, branch_fields(use_own_smtp="y"))
    assert errors_of(response) == {
        "server": ["SMTP Server is missing; enter it as host:port, e.g. smtp.example.com:587."],
        "email_address": [
            "E-mail Address is missing; enter the mailbox that sends the notifications, "
            "e.g. office@example.com."
        ],
        "password": ["Password is missing; enter the password of the SMTP login."],
    }
    assert 'class="tab-pane show active" id="email-pane"' in response.text
    assert "The branch was not saved." in response.text
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(Branch.id))) == 0


def test_fields_optional_without_own_smtp(logged_in, services) -> None:
    response = save_branch(logged_in, NEW, branch_fields(auth_method="oauth2"))
    assert response.status_code == 302, errors_of(response)
    smtp = smtp_of(services, "Prague")
    assert smtp.host is None
    assert smtp.mail_account_id is None


def test_bad_server_rejected_without_own_smtp(logged_in) -> None:
    response = save_branch(logged_in, NEW, branch_fields(server="smtp.example.com"))
    assert errors_of(response) == {
        "server": [
            "SMTP Server 'smtp.example.com' has no port; write it as host:port, "
            "e.g. smtp.example.com:587."
        ]
    }


def test_failed_post_keeps_typed_values(logged_in, client_ids) -> None:
    changes = own_smtp_fields(
        name="Brno", clients=[client_ids["Cobalt Media"]], server="smtp.brno.example.com"
    )
    response = save_branch(logged_in, NEW, changes)
    values = read_form(response.text, BRANCH_FORM).values
    assert ("name", "Brno") in values
    assert ("clients", client_ids["Cobalt Media"]) in values
    assert ("use_own_smtp", "y") in values
    assert ("server", "smtp.brno.example.com") in values
    assert ("password", "") in values
    assert SMTP_PASSWORD not in response.text


def test_secrets_absent_from_pages(logged_in, services, prague) -> None:
    changes = {
        "auth_method": "oauth2",
        "provider": "local",
        "oauth_client_id": "prague-app",
        "oauth_client_secret": CLIENT_SECRET,
    }
    saved = save_branch(logged_in, edit_url(prague), changes)
    assert saved.status_code == 302, errors_of(saved)
    failed = save_branch(logged_in, edit_url(prague), {**changes, "server": "bad"})
    for response in (logged_in.get(edit_url(prague)), failed, logged_in.get(BASE)):
        assert SMTP_PASSWORD not in response.text
        assert CLIENT_SECRET not in response.text
    with services.db.session() as session:
        account = session.scalars(sa.select(MailAccount)).one()
    assert (account.provider, account.email, account.client_id) == (
        "local",
        "prague@example.com",
        "prague-app",
    )
    assert smtp_of(services, "Prague").password_encrypted is None


def test_empty_password_keeps_saved_one(logged_in, services, prague) -> None:
    response = save_branch(logged_in, edit_url(prague), {"password": "", "login": "other"})
    assert response.status_code == 302, errors_of(response)
    smtp = smtp_of(services, "Prague")
    assert smtp.login == "other"
    assert services.box.decrypt(smtp.password_encrypted) == SMTP_PASSWORD


def test_branch_settings_apart_from_company(logged_in, services, prague) -> None:
    with services.db.session() as session:
        rows = session.scalars(sa.select(SmtpSettings)).all()
    assert [row.branch_id for row in rows] == [prague]
    company = logged_in.get("/configuration/general/settings/email").text
    assert "smtp.prague.example.com" not in company


def test_generate_token_from_branch(logged_in, services, prague) -> None:
    changes = {
        "auth_method": "oauth2",
        "provider": "local",
        "connection_type": "ssl",
        "oauth_client_id": "mailroom-app",
        "oauth_client_secret": CLIENT_SECRET,
    }
    response = save_branch(logged_in, edit_url(prague), changes, button="generate_token")
    assert_authorization_redirect(response, "prague@example.com")
    with services.db.session() as session:
        state = session.scalars(sa.select(OAuthState)).one()
    assert state.mail_account_id == smtp_of(services, "Prague").mail_account_id
    assert state.return_to == f"{edit_url(prague)}?tab=email"


def test_generate_token_needs_complete_settings(logged_in) -> None:
    changes = branch_fields(auth_method="oauth2")
    response = save_branch(logged_in, NEW, changes, button="generate_token")
    errors = errors_of(response)
    assert errors["provider"] == [
        "Provider is missing; OAuth2 needs one of: Google, Local, Microsoft 365."
    ]
    assert set(errors) == {"server", "email_address", "provider"}


# Test e-mail -----------------------------------------------------------------------------


def test_test_email_without_own_server(logged_in, services) -> None:
    assert save_branch(logged_in, NEW, branch_fields()).status_code == 302
    branch_id = branch_named(services, "Prague").id
    response = send_test(
        logged_in, edit_url(branch_id), f"{BASE}/{branch_id}/email/test", RECIPIENT
    )
    assert response.status_code == 200
    assert 'Branch "Prague" has no SMTP server of its own yet' in html.unescape(response.text)
    assert 'class="tab-pane show active" id="email-pane"' in response.text


def test_test_email_through_branch_server(logged_in, services, mail_stack: MailStack) -> None:
    mail_stack.sink.clear()
    changes = branch_fields(
        name="Ostrava",
        server=f"127.0.0.1:{mail_stack.dovecot.submission_port}",
        email_address=PASSWORD_USER,
        login=PASSWORD_USER,
        password=PASSWORD_USER_PASSWORD,
    )
    # Use Own SMTP Server stays unchecked: the server can be tested before switching over.
    assert save_branch(logged_in, NEW, changes).status_code == 302
    branch_id = branch_named(services, "Ostrava").id
    recipient = "branch-reader@example.org"
    response = send_test(
        logged_in, edit_url(branch_id), f"{BASE}/{branch_id}/email/test", recipient
    )
    assert response.request.path == edit_url(branch_id)
    assert f"Test e-mail sent to {recipient}." in response.text
    assert 'class="tab-pane show active" id="email-pane"' in response.text
    assert_test_message(wait_for_message(mail_stack, recipient), PASSWORD_USER, recipient)


# Access ----------------------------------------------------------------------------------


def test_posts_without_csrf_are_rejected(logged_in, services, prague) -> None:
    data = branch_fields(name="Brno", save="Save")
    data.pop("use_own_smtp")
    assert logged_in.post(NEW, data=data).status_code == 400
    assert logged_in.post(edit_url(prague), data=data).status_code == 400
    test_url = f"{BASE}/{prague}/email/test"
    assert logged_in.post(test_url, data={"test-recipient": RECIPIENT}).status_code == 400
    assert branch_named(services, "Prague").id == prague


def test_non_admin_is_forbidden(user_client, prague) -> None:
    for url in (BASE, NEW, edit_url(prague)):
        assert user_client.get(url).status_code == 403, url
    token = csrf_token(user_client, "/")
    for url in (NEW, edit_url(prague)):
        data = {"csrf_token": token, **branch_fields(name="Brno", save="Save")}
        data.pop("use_own_smtp")
        assert user_client.post(url, data=data).status_code == 403, url
    data = {"test-csrf_token": token, "test-recipient": RECIPIENT, "test-send": "Test"}
    assert user_client.post(f"{BASE}/{prague}/email/test", data=data).status_code == 403


def test_anonymous_is_sent_to_login(app, prague) -> None:
    anonymous = app.test_client()
    for url in (BASE, NEW, edit_url(prague)):
        response = anonymous.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next="), url


def test_unknown_branch_is_404(logged_in) -> None:
    assert logged_in.get(edit_url(999)).status_code == 404
    token = csrf_token(logged_in, BASE + "/new")
    response = logged_in.post(
        f"{BASE}/999/email/test", data={"test-csrf_token": token, "test-recipient": RECIPIENT}
    )
    assert response.status_code == 404


# In a browser ------------------------------------------------------------------------------


def test_tabs_in_browser(live_url, browser_page, services, client_ids) -> None:
    page = browser_page
    page.goto(f"{live_url}{NEW}")
    page.get_by_label("Name", exact=True).fill("Plzen")
    page.get_by_label("Clients").select_option([client_ids["Cobalt Media"]])
    assert page.get_by_label("SMTP Server", exact=True).is_hidden()

    page.get_by_role("tab", name="E-mail").click()
    assert page.get_by_label("Name", exact=True).is_hidden()
    assert page.get_by_label("SMTP Server", exact=True).is_visible()
    page.get_by_label("Use Own SMTP Server").check()
    page.get_by_role("radio", name="Password").check()
    page.get_by_label("SMTP Server", exact=True).fill("127.0.0.1:9")
    page.get_by_label("E-mail Address").fill("plzen@example.com")
    page.get_by_label("Connection Type").select_option("ssl")
    page.locator("#password").fill(SMTP_PASSWORD)
    page.locator("#save-email").click()
    page.get_by_text('Branch "Plzen" was saved.').wait_for()

    branch = branch_named(services, "Plzen")
    assert branch.use_own_smtp
    assert smtp_of(services, "Plzen").host == "127.0.0.1"
    assert client_branches(services)["Cobalt Media"] == branch.id

    # The Test controls sit in the E-mail tab but post their own form.
    page.get_by_role("tab", name="E-mail").click()
    page.get_by_label("Send Test E-mail to").fill(RECIPIENT)
    page.get_by_role("button", name="Test").click()
    page.get_by_text(f"The test e-mail to {RECIPIENT} was not sent").wait_for()
    assert "Nothing accepts connections at 127.0.0.1:9" in page.content()
    assert page.get_by_label("SMTP Server", exact=True).is_visible()  # the E-mail tab is open again


def test_concurrent_duplicate_name(logged_in, services, prague, monkeypatch) -> None:
    """A name taken between the check and the commit gets the same field error."""
    monkeypatch.setattr(BranchForm, "validate_name", lambda form, field: None)
    response = save_branch(logged_in, NEW, branch_fields(name="Prague"))
    assert errors_of(response) == {
        "name": ['Name "Prague" is already used by another branch; choose another name.']
    }
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(Branch.id))) == 1
