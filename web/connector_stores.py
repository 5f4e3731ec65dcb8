"""The two store sections of the connector form: where copies of the files go.

"After Successfully Processing, Store Files in" and "In Case of Errors, Store
Files in" each become one ConnectorStore row (role success or error), or no row
for Nowhere. Passwords and private keys are write-only: the form never shows
them, an empty input keeps the saved one, and a checkbox removes it.
"""

from __future__ import annotations

import posixpath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from wtforms import (
    BooleanField,
    Form,
    FormField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
)
from wtforms.validators import ValidationError

from locations import LocationError
from locations.sftp import load_private_key, parse_host_key
from mailauth import SecretBox
from models import Connector, ConnectorStore, SourceLocation, StoreRole

from .connector_fields import (
    CONTROL_CHARACTERS,
    WholeNumberField,
    WriteOnlyTextAreaField,
    add_error,
    is_host,
    require_choice,
    strip_text,
)

STORE_NOWHERE = "none"
STORE_LOCATION_CHOICES = [
    SelectChoice(STORE_NOWHERE, "Nowhere"),
    SelectChoice(SourceLocation.FOLDER.value, "Folder under the file store"),
    SelectChoice(SourceLocation.FTP.value, "FTP"),
    SelectChoice(SourceLocation.SFTP.value, "SFTP"),
]
STORE_TITLES = {
    StoreRole.SUCCESS: "After Successfully Processing, Store Files in",
    StoreRole.ERROR: "In Case of Errors, Store Files in",
}
STORE_FIELD_NAMES = {StoreRole.SUCCESS: "store_success", StoreRole.ERROR: "store_error"}
MAX_PATH_CHARS = 1024


class LocationForm(Form):
    """The server and path of a folder, FTP or SFTP location, without the choice of kind.

    Store sections and a connector's location source share these fields and
    their checks in check_location.
    """

    host = StringField("Host Name", filters=[strip_text], description="FTP and SFTP only.")
    port = WholeNumberField(
        "Port",
        invalid_message='Port "{value}" is not a number; enter a port from 1 to 65535, '
        "or leave it empty for the standard port.",
        description="FTP and SFTP only. Empty means the standard port: 21 for FTP, 22 for SFTP.",
    )
    username = StringField("Username", filters=[strip_text], description="FTP and SFTP only.")
    password = PasswordField(
        "Password",
        description="FTP and SFTP only. Stored encrypted and never shown again.",
    )
    forget_password = BooleanField("Remove the saved password")
    private_key = WriteOnlyTextAreaField(
        "Private key",
        description="SFTP only: an unencrypted Ed25519, ECDSA or RSA key in OpenSSH or PEM "
        "format, from the BEGIN line to the END line. Stored encrypted and never shown again.",
    )
    forget_private_key = BooleanField("Remove the saved private key")
    known_host_key = StringField(
        "Known host key",
        filters=[strip_text],
        description="SFTP only: the server's public key line, e.g. the content of "
        "/etc/ssh/ssh_host_ed25519_key.pub on the server. Connections to a server with "
        "another key are rejected.",
    )
    ftp_tls = BooleanField("Use TLS (explicit FTPS)", description="FTP only.")
    path = StringField(
        "Path",
        filters=[strip_text],
        description="For a folder: a folder inside the file store's locations folder, e.g. "
        "translations/done. For FTP and SFTP: the folder on the server; a relative path "
        "starts at the login folder.",
    )


class StoreForm(LocationForm):
    """One store section. The checks that need the saved row run in check_store."""

    location = SelectField(
        "Location", choices=STORE_LOCATION_CHOICES, default=STORE_NOWHERE, validate_choice=False
    )


class StoreFields:
    """The two store sections, mixed into ConnectorForm."""

    store_success = FormField(StoreForm, STORE_TITLES[StoreRole.SUCCESS])
    store_error = FormField(StoreForm, STORE_TITLES[StoreRole.ERROR])

    def store_sections(self) -> list[tuple[StoreRole, FormField]]:
        return [(role, getattr(self, name)) for role, name in STORE_FIELD_NAMES.items()]

    def typed_store_secrets(self) -> bool:
        """Return whether a password or key was typed, which a failed save must ask for again."""
        return any(
            section.form.password.data or section.form.private_key.data
            for _role, section in self.store_sections()
        )


def saved_stores(session: Session, connector: Connector | None) -> dict[StoreRole, ConnectorStore]:
    if connector is None or connector.id is None:
        return {}
    rows = session.scalars(
        sa.select(ConnectorStore).where(ConnectorStore.connector_id == connector.id)
    )
    return {row.role: row for row in rows}


def store_initial_data(row: ConnectorStore | None) -> dict[str, Any]:
    """Return a store section's values without the secrets, which are write-only."""
    if row is None:
        return {"location": STORE_NOWHERE}
    return {
        "location": row.location.value,
        "host": row.host or "",
        "port": row.port,
        "username": row.username or "",
        "known_host_key": row.known_host_key or "",
        "ftp_tls": row.ftp_tls,
        "path": row.path or "",
    }


def check_store(store: StoreForm, saved: ConnectorStore | None) -> None:
    """Add an error to each field of ``store`` whose value cannot be used."""
    try:
        require_choice(store.location, STORE_LOCATION_CHOICES)
    except ValidationError as error:
        add_error(store.location, str(error))
        return
    if store.location.data == STORE_NOWHERE:
        return
    check_location(
        store,
        store.location.data,
        saved_password=saved is not None and saved.password_encrypted is not None,
        saved_private_key=saved is not None and saved.private_key_encrypted is not None,
    )


def check_location(
    fields: LocationForm, location: str, *, saved_password: bool, saved_private_key: bool
) -> None:
    """Add an error to each field of ``fields`` that a ``location`` of this kind cannot use.

    ``location`` is folder, ftp or sftp. The saved flags tell whether an empty
    password or key input keeps a stored secret.
    """
    _check_path(fields, location)
    if location == SourceLocation.FOLDER.value:
        return

    _check_host(fields)
    _check_port(fields)
    username = fields.username.data or ""
    if not username:
        add_error(
            fields.username,
            "Username is missing; enter the login of the server account "
            "(anonymous for an anonymous FTP server).",
        )
    elif len(username) > 254:
        add_error(fields.username, f"Username has {len(username)} characters; shorten it to 254.")
    if location == SourceLocation.FTP.value:
        if fields.private_key.data:
            add_error(
                fields.private_key, "Private key is used only with SFTP; clear it or choose SFTP."
            )
        return
    _check_sftp(fields, saved_password, saved_private_key)


def _check_path(store: LocationForm, location: str) -> None:
    path = store.path.data or ""
    if not path:
        if location == SourceLocation.FOLDER.value:
            fix = "enter a folder inside the file store's locations folder, e.g. translations/done."
        else:
            fix = "enter the folder on the server, e.g. /outgoing, or . for the login folder."
        add_error(store.path, f"Path is missing; {fix}")
        return
    if len(path) > MAX_PATH_CHARS or CONTROL_CHARACTERS.search(path):
        add_error(
            store.path,
            f'Path "{path[:80]}" is not valid; use at most {MAX_PATH_CHARS} characters '
            "without line breaks.",
        )
        return
    if location == SourceLocation.FOLDER.value:
        parts = posixpath.normpath(path).split("/")
        if path.startswith("/") or ".." in path.split("/") or parts == ["."]:
            add_error(
                store.path,
                f'Path "{path[:80]}" must name a folder inside the file store\'s locations '
                'folder, without a leading "/" or "..", e.g. translations/done.',
            )


def _check_host(store: LocationForm) -> None:
    host = store.host.data or ""
    if not host:
        add_error(
            store.host, "Host Name is missing; enter the server name, e.g. files.example.com."
        )
    elif not is_host(host):
        add_error(
            store.host,
            f'Host Name "{host[:80]}" is not a server name; enter only the name or IP address, '
            "e.g. files.example.com, without a scheme, a path or a port.",
        )


def _check_port(store: LocationForm) -> None:
    port = store.port.data
    if store.port.process_errors or port is None:
        return
    if not 1 <= port <= 65535:
        add_error(
            store.port,
            f"Port {port} is out of range; enter a port from 1 to 65535, or leave it empty "
            "for the standard port (21 for FTP, 22 for SFTP).",
        )


def _check_sftp(store: LocationForm, saved_password: bool, saved_private_key: bool) -> None:
    known_host_key = store.known_host_key.data or ""
    if not known_host_key:
        add_error(
            store.known_host_key,
            "Known host key is missing; paste the server's public key line, e.g. the content "
            "of /etc/ssh/ssh_host_ed25519_key.pub on the server.",
        )
    else:
        try:
            parse_host_key(known_host_key)
        except LocationError:
            add_error(
                store.known_host_key,
                f'Known host key "{known_host_key[:40]}" is not a public key line; paste a '
                'line such as "ssh-ed25519 AAAA..." from /etc/ssh/ssh_host_ed25519_key.pub '
                "on the server.",
            )

    if store.private_key.data:
        try:
            load_private_key(store.private_key.data)
        except LocationError as error:
            add_error(store.private_key, str(error))
    has_password = bool(store.password.data) or (saved_password and not store.forget_password.data)
    has_key = bool(store.private_key.data) or (
        saved_private_key and not store.forget_private_key.data
    )
    if not has_password and not has_key:
        add_error(
            store.password,
            "Password or private key is missing; SFTP needs one of them, so enter a password "
            "or paste a private key.",
        )


def apply_stores(
    session: Session,
    connector: Connector,
    sections: list[tuple[StoreRole, FormField]],
    saved: dict[StoreRole, ConnectorStore],
    box: SecretBox,
) -> None:
    """Create, change or delete the store rows of ``connector``, which must have an id."""
    for role, section in sections:
        store: StoreForm = section.form
        row = saved.get(role)
        if store.location.data == STORE_NOWHERE:
            if row is not None:
                session.delete(row)
            continue
        if row is None:
            row = ConnectorStore(connector_id=connector.id, role=role)
            session.add(row)
        _copy_store(store, row, box)


def _copy_store(store: StoreForm, row: ConnectorStore, box: SecretBox) -> None:
    row.location = SourceLocation(store.location.data)
    row.path = store.path.data or ""
    if row.location == SourceLocation.FOLDER:
        # A folder under the file store needs no server, so no credentials linger.
        row.host = row.port = row.username = row.known_host_key = None
        row.password_encrypted = row.private_key_encrypted = None
        row.ftp_tls = False
        return
    row.host = store.host.data
    row.port = store.port.data
    row.username = store.username.data
    copy_server_secrets(store, row, row.location, box)


def copy_server_secrets(
    fields: LocationForm, target: Connector | ConnectorStore, kind: SourceLocation, box: SecretBox
) -> None:
    """Copy the password, private key, host key and TLS choice of an FTP or SFTP location.

    An empty password or key input keeps the saved secret unless its Remove
    box is checked, and settings of the other kind are cleared.
    """
    target.ftp_tls = kind == SourceLocation.FTP and bool(fields.ftp_tls.data)
    if fields.forget_password.data:
        target.password_encrypted = None
    if fields.password.data:
        target.password_encrypted = box.encrypt(fields.password.data)
    if kind == SourceLocation.SFTP:
        target.known_host_key = fields.known_host_key.data or None
        if fields.forget_private_key.data:
            target.private_key_encrypted = None
        if fields.private_key.data:
            target.private_key_encrypted = box.encrypt(fields.private_key.data)
    else:
        target.known_host_key = None
        target.private_key_encrypted = None


def describe_store(row: ConnectorStore | None) -> str:
    """Return a one-line summary for the connector page, without secrets."""
    if row is None:
        return "Nowhere"
    if row.location == SourceLocation.FOLDER:
        return f"Folder {row.path} under the file store"
    kind = "FTPS" if row.location == SourceLocation.FTP and row.ftp_tls else row.location.name
    port = f":{row.port}" if row.port else ""
    return f"{kind} {row.username}@{row.host}{port}, path {row.path}"
