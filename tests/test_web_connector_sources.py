"""Folder, FTP and SFTP sources set up through the connector form.

The pages are read and posted as a browser would. The run test uses a real
folder under the file store.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from intake import run_connector
from intake.definition import (
    DefinitionError,
    _check_quarantine_folder,
    apply_definition,
    export_connector,
)
from models import AfterProcessing, AuthMethod, Connector, Job, RunStatus, SourceLocation

from .conftest import csrf_token
from .mailhelpers import PDF_BYTES
from .test_web_connector_options import edit_url, ssh_keys  # noqa: F401
from .test_web_connectors import (  # noqa: F401  (fixtures)
    BASE,
    NEW,
    SAVED_PLACEHOLDER,
    connector_named,
    ids,
    password_fields,
    read_form,
    saved_password_connector,
    submit,
    validate_form,
)

SERVER_PASSWORD = "ftp-pw-Lx72-never-in-html"


def source(**values: Any) -> dict[str, Any]:
    return {f"location_source-{key}": value for key, value in values.items()}


def folder_fields(ids: dict[str, str], **changes: Any) -> dict[str, Any]:
    # The e-mail inputs keep values that would fail for a mailbox, because
    # they must be neither checked nor saved for a folder.
    return password_fields(
        ids,
        name="Shared folder",
        files_location="folder",
        host="",
        username="",
        password="",
        port="x",
        **source(path="incoming/orders"),
        **changes,
    )


def ftp_fields(ids: dict[str, str], **changes: Any) -> dict[str, Any]:
    values = password_fields(
        ids,
        name="Agency FTP",
        files_location="ftp",
        password="",
        **source(
            host="127.0.0.1",
            port="",
            username="translator",
            password=SERVER_PASSWORD,
            ftp_tls="y",
            path="/outgoing",
        ),
    )
    values.update(changes)
    return values


def sftp_fields(ids: dict[str, str], private_key: str, public_key: str, **changes: Any) -> dict:
    values = password_fields(
        ids,
        name="Agency SFTP",
        files_location="sftp",
        password="",
        **source(
            host="127.0.0.1",
            port="2222",
            username="mailroom",
            private_key=private_key,
            known_host_key=public_key,
            path="in",
        ),
    )
    values.update(changes)
    return values


# Creating and editing --------------------------------------------------------


def test_create_folder_source(logged_in, services, ids) -> None:
    response = submit(logged_in, NEW, folder_fields(ids))
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Shared folder")
    assert connector.source_location == SourceLocation.FOLDER
    assert connector.folder == "incoming/orders"
    assert connector.host == ""
    assert connector.password_encrypted is None
    assert connector.auth_method == AuthMethod.PASSWORD
    assert connector.mail_account_id is None

    page = logged_in.get(f"{BASE}/{connector.id}").text
    assert "Folder under the file store" in page
    assert "incoming/orders" in page


def test_create_ftp_source(logged_in, services, ids) -> None:
    response = submit(logged_in, NEW, ftp_fields(ids))
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Agency FTP")
    assert connector.source_location == SourceLocation.FTP
    assert connector.host == "127.0.0.1"
    assert connector.port == 21
    assert connector.username == "translator"
    assert connector.ftp_tls is True
    assert connector.folder == "/outgoing"
    assert services.box.decrypt(connector.password_encrypted) == SERVER_PASSWORD

    page = logged_in.get(f"{BASE}/{connector.id}").text
    assert "FTP with TLS (FTPS)" in page
    assert "translator at 127.0.0.1:21" in page
    assert SERVER_PASSWORD not in page
    edit = logged_in.get(edit_url(connector.id)).text
    assert SERVER_PASSWORD not in edit
    assert SAVED_PLACEHOLDER in edit


def test_create_sftp_source(logged_in, services, ids) -> None:
    private_key, public_key = ssh_keys()
    response = submit(logged_in, NEW, sftp_fields(ids, private_key, public_key))
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Agency SFTP")
    assert connector.source_location == SourceLocation.SFTP
    assert connector.port == 2222
    assert connector.known_host_key == public_key
    assert connector.password_encrypted is None
    assert services.box.decrypt(connector.private_key_encrypted) == private_key

    for url in (f"{BASE}/{connector.id}", edit_url(connector.id)):
        page = logged_in.get(url).text
        assert "PRIVATE KEY" not in page
        assert private_key.splitlines()[1] not in page


def test_edit_keeps_server_secrets(logged_in, services, ids) -> None:
    private_key, public_key = ssh_keys()
    submit(logged_in, NEW, sftp_fields(ids, private_key, public_key, **source(password="pw-1")))
    connector_id = connector_named(services, "Agency SFTP").id

    values = read_form(logged_in.get(edit_url(connector_id)).text).values
    assert ("location_source-password", "") in values
    assert ("location_source-private_key", "") in values
    response = submit(logged_in, edit_url(connector_id), {"location_source-path": "in/new"})
    assert response.status_code == 302, read_form(response.text).errors

    connector = connector_named(services, "Agency SFTP")
    assert connector.folder == "in/new"
    assert services.box.decrypt(connector.password_encrypted) == "pw-1"
    assert services.box.decrypt(connector.private_key_encrypted) == private_key


def test_switch_to_email_drops_server_secrets(logged_in, services, ids) -> None:
    submit(logged_in, NEW, ftp_fields(ids))
    connector_id = connector_named(services, "Agency FTP").id
    response = submit(
        logged_in,
        edit_url(connector_id),
        {
            "files_location": "email",
            "auth_method": "password",
            "host": "127.0.0.1",
            "port": "993",
            "username": "orders@example.com",
            "password": "",
        },
    )
    # The FTP password is no mailbox password, so the form requires a new one.
    assert response.status_code == 200
    assert read_form(response.text).errors["password"] == [
        "Password is missing; enter the mailbox password."
    ]


# Checks ----------------------------------------------------------------------


SOURCE_ERRORS = [
    (
        "folder",
        {"path": "../x"},
        "location_source-path",
        'Path "../x" must name a folder inside the file store\'s locations folder, without '
        'a leading "/" or "..", e.g. translations/done.',
    ),
    (
        "folder",
        {"path": "/srv/in"},
        "location_source-path",
        'Path "/srv/in" must name a folder inside the file store\'s locations folder, without '
        'a leading "/" or "..", e.g. translations/done.',
    ),
    (
        "folder",
        {"path": ""},
        "location_source-path",
        "Path is missing; enter a folder inside the file store's locations folder, "
        "e.g. translations/done.",
    ),
    (
        "ftp",
        {"host": ""},
        "location_source-host",
        "Host Name is missing; enter the server name, e.g. files.example.com.",
    ),
    (
        "ftp",
        {"host": "ftp://127.0.0.1"},
        "location_source-host",
        'Host Name "ftp://127.0.0.1" is not a server name; enter only the name or IP '
        "address, e.g. files.example.com, without a scheme, a path or a port.",
    ),
    (
        "ftp",
        {"port": "70000"},
        "location_source-port",
        "Port 70000 is out of range; enter a port from 1 to 65535, or leave it empty for "
        "the standard port (21 for FTP, 22 for SFTP).",
    ),
    (
        "ftp",
        {"port": "ftp"},
        "location_source-port",
        'Port "ftp" is not a number; enter a port from 1 to 65535, or leave it empty for '
        "the standard port.",
    ),
    (
        "ftp",
        {"username": ""},
        "location_source-username",
        "Username is missing; enter the login of the server account "
        "(anonymous for an anonymous FTP server).",
    ),
    (
        "ftp",
        {"path": ""},
        "location_source-path",
        "Path is missing; enter the folder on the server, e.g. /outgoing, or . for the "
        "login folder.",
    ),
    (
        "sftp",
        {"known_host_key": "not a key"},
        "location_source-known_host_key",
        'Known host key "not a key" is not a public key line; paste a line such as '
        '"ssh-ed25519 AAAA..." from /etc/ssh/ssh_host_ed25519_key.pub on the server.',
    ),
    (
        "sftp",
        {"known_host_key": ""},
        "location_source-known_host_key",
        "Known host key is missing; paste the server's public key line, e.g. the content "
        "of /etc/ssh/ssh_host_ed25519_key.pub on the server.",
    ),
    (
        "sftp",
        {"private_key": "", "password": ""},
        "location_source-password",
        "Password or private key is missing; SFTP needs one of them, so enter a password "
        "or paste a private key.",
    ),
]


def fields_for(ids: dict[str, str], location: str) -> dict[str, Any]:
    if location == "folder":
        return folder_fields(ids)
    if location == "ftp":
        return ftp_fields(ids)
    private_key, public_key = ssh_keys()
    return sftp_fields(ids, private_key, public_key)


@pytest.mark.parametrize(("location", "changes", "name", "message"), SOURCE_ERRORS)
def test_form_rejects_bad_source(app, services, ids, location, changes, name, message) -> None:
    data = fields_for(ids, location)
    data.update(source(**changes))
    form = validate_form(app, services, data)
    section, _, field_name = name.partition("-")
    assert form.errors[section][field_name] == [message]
    assert list(form.errors) == [section]


def test_form_rejects_unreadable_private_key(app, services, ids) -> None:
    _private_key, public_key = ssh_keys()
    data = sftp_fields(ids, "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n", public_key)
    form = validate_form(app, services, data)
    errors = form.errors["location_source"]["private_key"]
    assert len(errors) == 1
    assert "private key" in errors[0].lower()


def test_form_folder_ignores_email_fields(app, services, ids) -> None:
    data = folder_fields(
        ids, quarantine_folder="Mailroom//Errors", after_processing="move", move_to_folder=""
    )
    form = validate_form(app, services, data)
    assert form.errors == {}


def test_form_source_rejects_generate_token(app, services, ids) -> None:
    data = folder_fields(ids, generate_token="Generate new token")
    form = validate_form(app, services, data)
    assert form.errors["files_location"] == [
        "Generate new token works only when Files location is E-mail; click Save instead."
    ]


def test_failed_post_keeps_source_values(logged_in, ids) -> None:
    response = submit(logged_in, NEW, ftp_fields(ids, **source(port="0")))
    assert response.status_code == 200
    reader = read_form(response.text)
    values = dict(reader.values)
    assert values["files_location"] == "ftp"
    assert values["location_source-host"] == "127.0.0.1"
    assert values["location_source-port"] == "0"
    assert values["location_source-username"] == "translator"
    assert values["location_source-path"] == "/outgoing"
    assert values["location_source-password"] == ""
    assert SERVER_PASSWORD not in response.text


FOLDER_NAME_ERRORS = [
    (
        "quarantine_folder",
        {"quarantine_folder": "Mailroom//Errors"},
        'Quarantine folder "Mailroom//Errors" contains "//", an empty folder level; write '
        "the folder name as the server separates sub-folders, e.g. Mailroom/Errors, or "
        "leave it empty.",
    ),
    (
        "quarantine_folder",
        {"quarantine_folder": "/Errors"},
        'Quarantine folder "/Errors" starts or ends with "/", which leaves an empty folder '
        "level; write the folder name as the server separates sub-folders, e.g. "
        "Mailroom/Errors, or leave it empty.",
    ),
    (
        "quarantine_folder",
        {"quarantine_folder": "Mailroom/"},
        'Quarantine folder "Mailroom/" starts or ends with "/", which leaves an empty folder '
        "level; write the folder name as the server separates sub-folders, e.g. "
        "Mailroom/Errors, or leave it empty.",
    ),
    (
        "move_to_folder",
        {"after_processing": "move", "move_to_folder": "INBOX//Done"},
        'Move to folder "INBOX//Done" contains "//", an empty folder level; write the '
        "folder name as the server separates sub-folders, e.g. INBOX/Processed.",
    ),
]


@pytest.mark.parametrize(("name", "changes", "message"), FOLDER_NAME_ERRORS)
def test_form_rejects_empty_folder_level(app, services, ids, name, changes, message) -> None:
    form = validate_form(app, services, password_fields(ids, **changes))
    assert form.errors == {name: [message]}


def test_import_rejects_empty_folder_level(services, ids) -> None:
    connector = Connector(
        folder="INBOX", after_processing=AfterProcessing.DELETE, quarantine_folder="A//B"
    )
    with pytest.raises(DefinitionError) as raised:
        _check_quarantine_folder(connector)
    assert str(raised.value) == (
        "source.quarantine_folder: 'A//B' contains \"//\", an empty folder level; write the "
        "folder name as the server separates sub-folders, such as Mailroom/Errors"
    )


# Robot Code, export and import -----------------------------------------------


def robot_code_change(logged_in, url: str, change) -> Any:  # type: ignore[no-untyped-def]
    page = logged_in.get(url).text
    data = yaml.safe_load(dict(read_form(page).values)["robot_code"])
    change(data)
    return submit(logged_in, url, {"robot_code": yaml.safe_dump(data, sort_keys=False)})


@pytest.mark.parametrize(
    ("source_data", "location"),
    [
        ({"location": "folder", "folder": "incoming/orders"}, SourceLocation.FOLDER),
        (
            {"location": "ftp", "host": "127.0.0.1", "username": "ftpuser", "folder": "/in"},
            SourceLocation.FTP,
        ),
    ],
)
def test_robot_code_saves_location_source(
    logged_in, services, ids, saved_password_connector, source_data, location
) -> None:
    def change(data: dict[str, Any]) -> None:
        data["source"] = source_data

    extra = {"location_source-password": "ftp-pw"} if location == SourceLocation.FTP else {}
    url = edit_url(saved_password_connector)
    page = logged_in.get(url).text
    data = yaml.safe_load(dict(read_form(page).values)["robot_code"])
    change(data)
    response = submit(
        logged_in, url, {"robot_code": yaml.safe_dump(data, sort_keys=False), **extra}
    )
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Acme orders")
    assert connector.source_location == location
    assert connector.folder == source_data["folder"]
    assert connector.host == source_data.get("host", "")
    if location == SourceLocation.FTP:
        assert connector.port == 21
        assert services.box.decrypt(connector.password_encrypted) == "ftp-pw"


def test_robot_code_sftp_needs_host_key(logged_in, services, ids, saved_password_connector):
    def change(data: dict[str, Any]) -> None:
        data["source"] = {
            "location": "sftp",
            "host": "127.0.0.1",
            "port": 2222,
            "username": "mailroom",
            "folder": "in",
        }

    response = robot_code_change(logged_in, edit_url(saved_password_connector), change)
    assert response.status_code == 200
    errors = read_form(response.text).errors
    # The host key is set in the form, so its error shows at that input.
    assert errors["location_source-known_host_key"][0].startswith("Known host key is missing")
    assert "robot_code" not in errors
    values = dict(read_form(response.text).values)
    assert values["location_source-port"] == "2222"


def test_robot_code_carries_host_key_and_ftps(
    logged_in, services, ids, saved_password_connector
) -> None:
    private_key, public_key = ssh_keys()
    url = edit_url(saved_password_connector)

    def to_sftp(data: dict[str, Any]) -> None:
        data["source"] = {
            "location": "sftp",
            "host": "127.0.0.1",
            "port": 2222,
            "username": "mailroom",
            "folder": "in",
            "known_host_key": public_key,
        }

    response = robot_code_change(logged_in, url, to_sftp)
    assert response.status_code == 200  # the private key is set in the form only
    assert dict(read_form(response.text).values)["location_source-known_host_key"] == public_key

    def to_ftps(data: dict[str, Any]) -> None:
        data["source"] = {
            "location": "ftp",
            "host": "127.0.0.1",
            "username": "ftpuser",
            "folder": "in",
            "ftp_tls": True,
        }

    page = logged_in.get(url).text
    data = yaml.safe_load(dict(read_form(page).values)["robot_code"])
    to_ftps(data)
    response = submit(
        logged_in,
        url,
        {"robot_code": yaml.safe_dump(data, sort_keys=False), "location_source-password": "pw"},
    )
    assert response.status_code == 302, read_form(response.text).errors
    with services.db.session() as session:
        connector = session.scalars(
            sa.select(Connector).where(Connector.name == "Acme orders")
        ).one()
        assert connector.ftp_tls is True
        exported = export_connector(connector)
    assert exported["source"]["ftp_tls"] is True
    assert "known_host_key" not in exported["source"]


def test_export_import_round_trip(logged_in, services, ids) -> None:
    private_key, public_key = ssh_keys()
    submit(logged_in, NEW, folder_fields(ids))
    submit(logged_in, NEW, ftp_fields(ids, **source(port="2121")))
    submit(logged_in, NEW, sftp_fields(ids, private_key, public_key))
    for name in ("Shared folder", "Agency FTP", "Agency SFTP"):
        with services.db.session() as session:
            original = session.scalars(sa.select(Connector).where(Connector.name == name)).one()
            exported = export_connector(original)
            copy = apply_definition(session, {**exported, "name": f"{name} copy"})
            session.flush()
            assert copy.source_location == original.source_location
            assert copy.folder == original.folder
            assert copy.host == original.host
            assert copy.username == original.username
            if original.source_location != SourceLocation.FOLDER:
                assert copy.port == original.port
            assert copy.ftp_tls == original.ftp_tls
            assert copy.known_host_key == original.known_host_key
            assert export_connector(copy) == {**exported, "name": f"{name} copy"}
            session.rollback()


# Running ---------------------------------------------------------------------


def test_folder_source_from_form_runs(logged_in, services, ids) -> None:
    ctx = dataclasses.replace(services.intake_context(), location_quiet_seconds=0.2)
    response = submit(logged_in, NEW, folder_fields(ids))
    assert response.status_code == 302, read_form(response.text).errors
    connector_id = connector_named(services, "Shared folder").id

    inbox = ctx.locations_root / "incoming" / "orders"
    inbox.mkdir(parents=True)
    (inbox / "Leaflet.pdf").write_bytes(PDF_BYTES)
    time.sleep(0.3)

    outcome = run_connector(ctx, connector_id, "manual")
    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    assert outcome.jobs_created == 1
    with services.db.session() as session:
        job = session.scalars(sa.select(Job)).one()
        assert [f.original_name for f in job.files] == ["Leaflet.pdf"]
    assert list(inbox.iterdir()) == []


def test_test_connector_lists_location_source(logged_in, services, ids) -> None:
    submit(logged_in, NEW, folder_fields(ids))
    connector_id = connector_named(services, "Shared folder").id
    inbox = services.intake_context().locations_root / "incoming" / "orders"
    inbox.mkdir(parents=True)
    (inbox / "Leaflet.pdf").write_bytes(PDF_BYTES)
    token = csrf_token(logged_in, f"{BASE}/{connector_id}")
    response = logged_in.post(f"{BASE}/{connector_id}/test", data={"csrf_token": token})
    assert response.status_code == 200
    assert "Listed the folder &#39;incoming/orders&#39; of the file store" in response.text
    assert "Leaflet.pdf" in response.text
    assert "Finish Test" in response.text
    assert "1 file or folder in the folder is for this connector" in response.text
    assert "Nothing was changed in the source." in response.text
    assert "Sender" not in response.text
    assert (inbox / "Leaflet.pdf").exists()
