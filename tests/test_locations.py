"""Remote file locations against real servers on 127.0.0.1.

The same scenarios run against a folder under the locations root, pyftpdlib over plain
FTP and explicit FTPS, and OpenSSH's sshd over SFTP with key authentication. Test files
are written straight into the directory that each server serves. Password logins to
sshd are tested only for rejection, because the harness cannot give a system account a
password. Without /usr/sbin/sshd the SFTP tests are skipped, unless CI is set, where
they fail.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devservers.certs import CertificatePaths, make_certificate
from devservers.ftp_server import FtpServer
from devservers.sftp_server import SSHD, SftpServer
from locations import Location, LocationError, LocationSettings, Unit, open_location
from locations.local import FolderLocation
from locations.sftp import describe_key, parse_host_key

from .servers import require

FTP_USER = "anna"
FTP_PASSWORD = "ftp secret"
READ_ONLY_USER = "reader"
QUIET = 0.5
BACKENDS = ["folder", "ftp", "ftps", "sftp"]


# Keys and servers


@dataclass(frozen=True)
class KeyPair:
    private: str
    public: str


def make_key_pair(passphrase: bytes | None = None) -> KeyPair:
    key = ed25519.Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(private.decode(), public.decode())


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return make_certificate(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    users = {FTP_USER: FTP_PASSWORD, READ_ONLY_USER: FTP_PASSWORD}
    root = tmp_path_factory.mktemp("ftp-root")
    with FtpServer(root, users, read_only_users=[READ_ONLY_USER]) as server:
        yield server


@pytest.fixture(scope="module")
def ftps_server(
    tmp_path_factory: pytest.TempPathFactory, certificates: CertificatePaths
) -> Iterator[FtpServer]:
    root = tmp_path_factory.mktemp("ftps-root")
    with FtpServer(root, {FTP_USER: FTP_PASSWORD}, tls_cert=certificates) as server:
        yield server


@pytest.fixture(scope="module")
def client_key() -> KeyPair:
    return make_key_pair()


@pytest.fixture(scope="module")
def sftp_server(
    tmp_path_factory: pytest.TempPathFactory, client_key: KeyPair
) -> Iterator[SftpServer]:
    require(os.access(SSHD, os.X_OK), f"{SSHD} is missing (apt-get install openssh-server)")
    root = tmp_path_factory.mktemp("sftp-root")
    with SftpServer(root, current_user(), "unused password", client_key.public) as server:
        yield server


def closed_port() -> Iterator[int]:
    """Yield a loopback port that refuses connections while the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture
def refused_port() -> Iterator[int]:
    yield from closed_port()


# One location per test, in a fresh folder


@dataclass
class Backend:
    name: str
    settings: LocationSettings
    inbox: Path
    """Local directory behind the location's path, for writing test files directly."""
    folder_root: Path
    ssl_context: ssl.SSLContext | None = None

    def open(self, **changes: object) -> Location:
        settings = dataclasses.replace(self.settings, **changes)  # type: ignore[arg-type]
        return open_location(settings, folder_root=self.folder_root, ssl_context=self.ssl_context)

    @property
    def where(self) -> str:
        if self.name == "folder":
            return f"in the locations folder {str(self.folder_root)!r}"
        return f"on 127.0.0.1:{self.settings.port}"


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    folder = f"inbox-{uuid.uuid4().hex[:8]}"
    folder_root = tmp_path / "locations"
    folder_root.mkdir()

    if name == "folder":
        settings = LocationSettings(kind="folder", path=folder, timeout=10)
        inbox = folder_root / folder
        inbox.mkdir()
        return Backend(name, settings, inbox, folder_root)
    if name in ("ftp", "ftps"):
        server: FtpServer = request.getfixturevalue(f"{name}_server")
        certificates: CertificatePaths = request.getfixturevalue("certificates")
        settings = LocationSettings(
            kind="ftp",
            path=folder,
            host="127.0.0.1",
            port=server.port,
            username=FTP_USER,
            password=FTP_PASSWORD,
            ftp_tls=name == "ftps",
            timeout=10,
        )
        inbox = server.root / folder
        inbox.mkdir()
        context = ssl.create_default_context(cafile=str(certificates.ca))
        return Backend(name, settings, inbox, folder_root, context)

    sftp: SftpServer = request.getfixturevalue("sftp_server")
    key: KeyPair = request.getfixturevalue("client_key")
    settings = LocationSettings(
        kind="sftp",
        path=folder,
        host="127.0.0.1",
        port=sftp.port,
        username=current_user(),
        private_key=key.private,
        known_host_key=sftp.host_key_line,
        timeout=10,
    )
    inbox = sftp.root / folder
    inbox.mkdir()
    return Backend(name, settings, inbox, folder_root)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def unit_named(units: list[Unit], name: str) -> Unit:
    matches = [unit for unit in units if unit.name == name]
    assert matches, f"{name!r} not in {[unit.name for unit in units]}"
    return matches[0]


# Scenarios for every kind of location


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_list_units_top_level(backend: Backend) -> None:
    write(backend.inbox / "a.txt", b"hello")
    write(backend.inbox / "Project" / "b.txt", b"12345678")
    write(backend.inbox / "Project" / "deep" / "c.bin", b"xyz")
    write(backend.inbox / ".partial.txt", b"hidden")

    with backend.open() as location:
        units = location.list_units()

    assert [unit.name for unit in units] == ["Project", "a.txt"]
    assert units[0].is_dir
    assert units[0].size == 11
    assert not units[1].is_dir
    assert units[1].size == 5
    assert abs(units[1].mtime - (backend.inbox / "a.txt").stat().st_mtime) < 2


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_file_being_written_not_stable(backend: Backend) -> None:
    path = write(backend.inbox / "growing.docx", b"first part")

    with backend.open() as location:
        unit = unit_named(location.list_units(), "growing.docx")
        with path.open("ab") as handle:
            handle.write(b", second part")
        assert not location.is_stable(unit, quiet_seconds=QUIET)

        unit = unit_named(location.list_units(), "growing.docx")
        assert location.is_stable(unit, quiet_seconds=QUIET)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_folder_being_filled_not_stable(backend: Backend) -> None:
    write(backend.inbox / "Batch" / "one.txt", b"one")

    with backend.open() as location:
        unit = unit_named(location.list_units(), "Batch")
        write(backend.inbox / "Batch" / "later" / "two.txt", b"two")
        assert not location.is_stable(unit, quiet_seconds=QUIET)

        unit = unit_named(location.list_units(), "Batch")
        assert location.is_stable(unit, quiet_seconds=QUIET)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_old_listing_counts_as_first_poll(backend: Backend) -> None:
    write(backend.inbox / "done.txt", b"finished")

    with backend.open() as location:
        unit = unit_named(location.list_units(), "done.txt")
        time.sleep(QUIET)
        started = time.monotonic()
        stable = location.is_stable(unit, quiet_seconds=QUIET)
        elapsed = time.monotonic() - started

    assert stable
    assert elapsed < QUIET


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_download_file_exact_bytes(backend: Backend, tmp_path: Path) -> None:
    data = secrets.token_bytes(300_000)
    write(backend.inbox / "Vertrag März.pdf", data)
    target = tmp_path / "work"
    target.mkdir()

    with backend.open() as location:
        unit = unit_named(location.list_units(), "Vertrag März.pdf")
        paths = location.download(unit, target)

    assert paths == [target / "Vertrag März.pdf"]
    assert paths[0].read_bytes() == data


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_download_nested_folder(backend: Backend, tmp_path: Path) -> None:
    files = {
        "Project/readme.txt": b"read me",
        "Project/source/de.xliff": secrets.token_bytes(5000),
        "Project/source/images/logo.png": secrets.token_bytes(70_000),
    }
    for relative, data in files.items():
        write(backend.inbox / relative, data)
    write(backend.inbox / "Project" / "source" / ".DS_Store", b"metadata")
    (backend.inbox / "Project" / "empty").mkdir()
    target = tmp_path / "work"
    target.mkdir()

    with backend.open() as location:
        unit = unit_named(location.list_units(), "Project")
        paths = location.download(unit, target)

    downloaded = {path.relative_to(target).as_posix(): path.read_bytes() for path in paths}
    assert downloaded == files
    assert (target / "Project" / "empty").is_dir()
    assert not (target / "Project" / "source" / ".DS_Store").exists()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_download_sanitizes_remote_names(backend: Backend, tmp_path: Path) -> None:
    write(backend.inbox / "x\\..\\..\\evil.txt", b"backslashes")
    write(backend.inbox / "Bundle" / "CON", b"device name")
    target = tmp_path / "work"
    target.mkdir()

    with backend.open() as location:
        units = location.list_units()
        first = location.download(unit_named(units, "x\\..\\..\\evil.txt"), target)
        second = location.download(unit_named(units, "Bundle"), target)

    assert first == [target / "evil.txt"]
    assert first[0].read_bytes() == b"backslashes"
    assert second == [target / "Bundle" / "_CON"]
    assert sorted(os.listdir(tmp_path)) == ["locations", "work"]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_download_name_taken_gets_number(backend: Backend, tmp_path: Path) -> None:
    write(backend.inbox / "report.pdf", b"remote")
    target = tmp_path / "work"
    write(target / "report.pdf", b"already here")

    with backend.open() as location:
        paths = location.download(unit_named(location.list_units(), "report.pdf"), target)

    assert paths == [target / "report (2).pdf"]
    assert (target / "report.pdf").read_bytes() == b"already here"
    assert paths[0].read_bytes() == b"remote"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_remove_file_and_folder(backend: Backend) -> None:
    write(backend.inbox / "single.txt", b"one")
    write(backend.inbox / "Project" / "sub" / "two.txt", b"two")
    write(backend.inbox / "Project" / ".hidden", b"dot file")
    write(backend.inbox / "keep.txt", b"stays")

    with backend.open() as location:
        units = location.list_units()
        location.remove(unit_named(units, "single.txt"))
        location.remove(unit_named(units, "Project"))
        remaining = [unit.name for unit in location.list_units()]
        # A second call finds nothing to remove, as when a job is retried.
        location.remove(unit_named(units, "single.txt"))

    assert remaining == ["keep.txt"]
    assert sorted(os.listdir(backend.inbox)) == ["keep.txt"]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_remove_changed_file_kept(backend: Backend) -> None:
    path = write(backend.inbox / "late.txt", b"version one")

    with backend.open() as location:
        unit = unit_named(location.list_units(), "late.txt")
        path.write_bytes(b"version two, longer")
        with pytest.raises(LocationError) as raised:
            location.remove(unit)

    expected_path = f"{backend.settings.path}/late.txt"
    assert str(raised.value) == (
        f"{expected_path!r} {backend.where} changed after it was listed, so it was left in "
        "place. The next listing shows it again."
    )
    assert path.read_bytes() == b"version two, longer"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_upload_name_collision(backend: Backend, tmp_path: Path) -> None:
    first = write(tmp_path / "first.txt", b"first copy")
    second = write(tmp_path / "second.txt", b"second copy")
    write(backend.inbox / "Job 7" / "Offer.TXT", b"existing")

    with backend.open() as location:
        stored_first = location.upload(first, "offer.txt")
        stored_second = location.upload(second, "offer.txt")
        stored_sub = location.upload(first, "offer.txt", "Job 7")

    path = backend.settings.path
    assert stored_first == f"{path}/offer.txt"
    assert stored_second == f"{path}/offer (2).txt"
    assert (backend.inbox / "offer.txt").read_bytes() == b"first copy"
    assert (backend.inbox / "offer (2).txt").read_bytes() == b"second copy"
    assert (backend.inbox / "Job 7" / "Offer.TXT").read_bytes() == b"existing"
    assert stored_sub == f"{path}/Job 7/offer.txt"
    assert not [name for name in os.listdir(backend.inbox) if name.startswith(".")]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_upload_traversal_stays_inside(backend: Backend, tmp_path: Path) -> None:
    source = write(tmp_path / "payload.txt", b"payload")
    outside_before = sorted(os.listdir(backend.inbox.parent))

    with backend.open() as location:
        stored = location.upload(source, "../evil.txt", subfolder="../../out/./..")
        stored_absolute = location.upload(source, "/etc/passwd")

    path = backend.settings.path
    assert stored == f"{path}/out/evil.txt"
    assert (backend.inbox / "out" / "evil.txt").read_bytes() == b"payload"
    assert stored_absolute == f"{path}/passwd"
    assert (backend.inbox / "passwd").read_bytes() == b"payload"
    assert sorted(os.listdir(backend.inbox.parent)) == outside_before


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_check_passes_and_leaves_nothing(backend: Backend) -> None:
    with backend.open() as location:
        location.check()

    assert os.listdir(backend.inbox) == []


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_check_missing_path(backend: Backend) -> None:
    with backend.open(path="missing") as location, pytest.raises(LocationError) as raised:
        location.check()

    assert str(raised.value) == (
        f"Path 'missing' was not found {backend.where}. Check the path setting."
    )


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_check_path_is_file(backend: Backend) -> None:
    write(backend.inbox / "notes.txt", b"a file")
    path = f"{backend.settings.path}/notes.txt"

    with backend.open(path=path) as location, pytest.raises(LocationError) as raised:
        location.check()

    assert str(raised.value) == (
        f"Path {path!r} {backend.where} is not a folder. Check the path setting."
    )


# FTP and FTPS


def ftp_settings(server: FtpServer, **changes: object) -> LocationSettings:
    settings = LocationSettings(
        kind="ftp",
        path="",
        host="127.0.0.1",
        port=server.port,
        username=FTP_USER,
        password=FTP_PASSWORD,
        timeout=5,
    )
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def check_error(settings: LocationSettings, tmp_path: Path, **options: object) -> str:
    location = open_location(settings, folder_root=tmp_path, **options)  # type: ignore[arg-type]
    with location, pytest.raises(LocationError) as raised:
        location.check()
    return str(raised.value)


def test_ftp_check_wrong_port(ftp_server: FtpServer, refused_port: int, tmp_path: Path) -> None:
    message = check_error(ftp_settings(ftp_server, port=refused_port), tmp_path)

    assert message == (
        f"Connection to 127.0.0.1:{refused_port} was refused. Check the host and port "
        "settings, and that the FTP server is running."
    )


def test_ftp_check_wrong_password(ftp_server: FtpServer, tmp_path: Path) -> None:
    message = check_error(ftp_settings(ftp_server, password="wrong"), tmp_path)

    assert message == (
        f"Login as 'anna' on 127.0.0.1:{ftp_server.port} was rejected (server reply: "
        "530 Authentication failed.). Check the username and password settings."
    )


def test_ftp_check_unknown_user(ftp_server: FtpServer, tmp_path: Path) -> None:
    message = check_error(ftp_settings(ftp_server, username="nobody-here"), tmp_path)

    assert message.startswith(f"Login as 'nobody-here' on 127.0.0.1:{ftp_server.port} was")
    assert message.endswith("Check the username and password settings.")


def test_ftp_check_read_only_user(ftp_server: FtpServer, tmp_path: Path) -> None:
    (ftp_server.root / "shared").mkdir(exist_ok=True)
    settings = ftp_settings(ftp_server, username=READ_ONLY_USER, path="shared")

    message = check_error(settings, tmp_path)

    assert message == (
        f"Could not write to 'shared' on 127.0.0.1:{ftp_server.port}: permission denied. "
        "Check the path setting and the folder's permissions for this user."
    )


def test_ftp_timeout_names_host_and_port(tmp_path: Path) -> None:
    # A socket that listens but never accepts: the TCP handshake completes in the
    # kernel, and the FTP greeting never arrives.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        settings = LocationSettings(
            kind="ftp", path="", host="127.0.0.1", port=port, username="x", timeout=0.5
        )
        started = time.monotonic()
        message = check_error(settings, tmp_path)
        elapsed = time.monotonic() - started

    assert message == (
        f"Connection to 127.0.0.1:{port} timed out after 0.5 s. Check the host and port "
        "settings, and that no firewall blocks the connection."
    )
    assert elapsed < 5


def test_ftps_untrusted_certificate(ftps_server: FtpServer, tmp_path: Path) -> None:
    # The default context trusts only the system's authorities, and the server sends its
    # chain up to the self-signed test CA.
    settings = ftp_settings(ftps_server, ftp_tls=True)

    message = check_error(settings, tmp_path, ssl_context=ssl.create_default_context())

    assert message == (
        f"The TLS certificate of 127.0.0.1:{ftps_server.port} could not be verified: "
        "self-signed certificate in certificate chain. Check the host setting, and that this "
        "machine trusts the authority that signed the server's certificate."
    )


def test_ftps_server_requires_tls(ftps_server: FtpServer, tmp_path: Path) -> None:
    message = check_error(ftp_settings(ftps_server), tmp_path)

    assert message == (
        f"The FTP server on 127.0.0.1:{ftps_server.port} requires TLS (server reply: "
        "550 SSL/TLS required on the control channel.). Turn on the FTP TLS setting."
    )


def test_ftps_against_plain_server(
    ftp_server: FtpServer, certificates: CertificatePaths, tmp_path: Path
) -> None:
    context = ssl.create_default_context(cafile=str(certificates.ca))

    message = check_error(ftp_settings(ftp_server, ftp_tls=True), tmp_path, ssl_context=context)

    assert message.startswith(
        f"The FTP server on 127.0.0.1:{ftp_server.port} does not offer TLS (AUTH TLS was rejected: "
    )
    assert message.endswith("Enable TLS on the server, or turn off the FTP TLS setting.")


def test_ftp_without_mlst(tmp_path: Path) -> None:
    root = tmp_path / "ftp-root"
    write(root / "inbox" / "a.txt", b"alpha")
    write(root / "inbox" / "Project" / "deep" / "b.txt", b"bravo")
    source = write(tmp_path / "upload.txt", b"upload")
    target = tmp_path / "work"
    target.mkdir()

    with FtpServer(root, {FTP_USER: FTP_PASSWORD}, mlst=False) as server:
        settings = ftp_settings(server, path="inbox")
        with open_location(settings, folder_root=tmp_path) as location:
            location.check()
            units = location.list_units()
            paths = location.download(unit_named(units, "Project"), target)
            stored = [location.upload(source, "a.txt") for _ in range(2)]
            location.remove(unit_named(units, "Project"))

    assert [(unit.name, unit.is_dir, unit.size) for unit in units] == [
        ("Project", True, 5),
        ("a.txt", False, 5),
    ]
    assert units[1].mtime > 0
    assert paths == [target / "Project" / "deep" / "b.txt"]
    assert paths[0].read_bytes() == b"bravo"
    assert stored == ["inbox/a (2).txt", "inbox/a (3).txt"]
    assert sorted(os.listdir(root / "inbox")) == ["a (2).txt", "a (3).txt", "a.txt"]


def test_ftp_login_folder_path(ftp_server: FtpServer, tmp_path: Path) -> None:
    source = write(tmp_path / "note.txt", b"note")
    name = f"note-{uuid.uuid4().hex[:8]}.txt"

    with open_location(ftp_settings(ftp_server, path=""), folder_root=tmp_path) as location:
        stored = location.upload(source, name)
        listed = [unit.name for unit in location.list_units()]

    assert stored == name
    assert name in listed
    assert (ftp_server.root / name).read_bytes() == b"note"


def test_ftp_connection_closed_by_context(ftp_server: FtpServer, tmp_path: Path) -> None:
    location = open_location(ftp_settings(ftp_server), folder_root=tmp_path)
    with location:
        location.list_units()

    # After the block, a new call opens a new connection.
    assert location.list_units() is not None
    location.close()


# SFTP


def sftp_settings(server: SftpServer, key: KeyPair, **changes: object) -> LocationSettings:
    settings = LocationSettings(
        kind="sftp",
        path=".",
        host="127.0.0.1",
        port=server.port,
        username=current_user(),
        private_key=key.private,
        known_host_key=server.host_key_line,
        timeout=5,
    )
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def test_sftp_check_wrong_port(
    sftp_server: SftpServer, client_key: KeyPair, refused_port: int, tmp_path: Path
) -> None:
    message = check_error(sftp_settings(sftp_server, client_key, port=refused_port), tmp_path)

    assert message == (
        f"Connection to 127.0.0.1:{refused_port} was refused. Check the host and port "
        "settings, and that the SSH server is running."
    )


def test_sftp_check_wrong_password(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    settings = sftp_settings(sftp_server, client_key, private_key=None, password="wrong")

    message = check_error(settings, tmp_path)

    assert message == (
        f"Login as {current_user()!r} on 127.0.0.1:{sftp_server.port} was rejected. "
        "Check the username and password settings."
    )


def test_sftp_check_unknown_key(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    settings = sftp_settings(sftp_server, client_key, private_key=make_key_pair().private)

    message = check_error(settings, tmp_path)

    assert message == (
        f"Login as {current_user()!r} on 127.0.0.1:{sftp_server.port} was rejected. "
        "Check the username and private key settings, and that the user's authorized_keys "
        "file on the server has the public key."
    )


def test_sftp_host_key_mismatch(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    other_key = make_key_pair().public
    server_key = parse_host_key(sftp_server.host_key_line)
    settings = sftp_settings(sftp_server, client_key, known_host_key=other_key)

    message = check_error(settings, tmp_path)

    assert message == (
        f"The host key of 127.0.0.1:{sftp_server.port} does not match the known host key "
        f"setting. The server sent ssh-ed25519 {server_key.fingerprint}, but the setting "
        f"contains ssh-ed25519 {parse_host_key(other_key).fingerprint}. If the server's key "
        "was replaced on purpose, paste its new public key line into the known host key "
        "setting; otherwise someone may be intercepting the connection."
    )
    assert server_key.fingerprint.startswith("SHA256:")


def test_sftp_host_key_missing(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    server_key = parse_host_key(sftp_server.host_key_line)
    settings = sftp_settings(sftp_server, client_key, known_host_key=None)

    message = check_error(settings, tmp_path)

    assert message == (
        f"The known host key setting is empty, so the server at 127.0.0.1:{sftp_server.port} "
        f"cannot be trusted. It sent the host key {describe_key(server_key)}. Compare that "
        "with the server's key (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the "
        "server), then paste the server's public key line into the known host key setting."
    )


def test_sftp_known_hosts_line_accepted(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    line = f"[127.0.0.1]:{sftp_server.port} {sftp_server.host_key_line} comment"
    settings = sftp_settings(sftp_server, client_key, known_host_key=line)

    with open_location(settings, folder_root=tmp_path) as location:
        location.check()


def test_sftp_invalid_known_host_key(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    settings = sftp_settings(sftp_server, client_key, known_host_key="ssh-ed25519 not-base64!")

    message = check_error(settings, tmp_path)

    assert message.startswith("The known host key setting is not a valid public key line.")


def test_sftp_encrypted_private_key(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    encrypted = make_key_pair(passphrase=b"secret").private
    settings = sftp_settings(sftp_server, client_key, private_key=encrypted)

    message = check_error(settings, tmp_path)

    assert message == (
        "The private key setting contains a key encrypted with a passphrase. Enter the "
        "key without a passphrase (ssh-keygen -p -N '' -f KEYFILE removes it)."
    )


def test_sftp_port_of_other_service(
    ftp_server: FtpServer, client_key: KeyPair, sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = sftp_settings(sftp_server, client_key, port=ftp_server.port)

    message = check_error(settings, tmp_path)

    assert message.startswith(
        f"The server at 127.0.0.1:{ftp_server.port} did not respond as an SSH server"
    )
    assert message.endswith("Check the port setting.")


def test_sftp_server_key_line_parses(sftp_server: SftpServer) -> None:
    key = parse_host_key(sftp_server.host_key_line)

    assert isinstance(key, paramiko.Ed25519Key)
    assert sftp_server.host_key_line.startswith("ssh-ed25519 AAAA")


def test_sftp_login_folder_path(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    source = write(tmp_path / "note.txt", b"note")
    name = f"note-{uuid.uuid4().hex[:8]}.txt"

    settings = sftp_settings(sftp_server, client_key, path="")
    with open_location(settings, folder_root=tmp_path) as location:
        stored = location.upload(source, name)
        listed = [unit.name for unit in location.list_units()]

    assert stored == name
    assert name in listed
    assert (sftp_server.root / name).read_bytes() == b"note"


def test_sftp_skips_symbolic_links(
    sftp_server: SftpServer, client_key: KeyPair, tmp_path: Path
) -> None:
    inbox = sftp_server.root / f"links-{uuid.uuid4().hex[:8]}"
    write(inbox / "real.txt", b"real")
    (inbox / "link.txt").symlink_to(tmp_path / "secret.txt")
    write(tmp_path / "secret.txt", b"secret")

    settings = sftp_settings(sftp_server, client_key, path=inbox.name)
    with open_location(settings, folder_root=tmp_path) as location:
        names = [unit.name for unit in location.list_units()]

    assert names == ["real.txt"]


# Folder locations


def folder_settings(path: str) -> LocationSettings:
    return LocationSettings(kind="folder", path=path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "The path setting is empty. Enter the name of a folder inside the locations "
             "folder {root!r}."),
        ("../outside", "Path '../outside' must be relative to the locations folder {root!r} "
                       "and must not contain '..'. Check the path setting."),
        ("/etc", "Path '/etc' must be relative to the locations folder {root!r} and must "
                 "not contain '..'. Check the path setting."),
        (".", "Path '.' leads outside the locations folder {root!r}, through a symbolic "
              "link or to the folder itself. Check the path setting, or mount the shared "
              "folder inside the locations folder instead of linking to it."),
    ],
)  # fmt: skip
def test_folder_path_rejected(tmp_path: Path, path: str, expected: str) -> None:
    with pytest.raises(LocationError) as raised:
        open_location(folder_settings(path), folder_root=tmp_path)

    assert str(raised.value) == expected.format(root=str(tmp_path))


def test_folder_symlink_escaping_rejected(tmp_path: Path) -> None:
    root = tmp_path / "locations"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "share").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(LocationError) as raised:
        open_location(folder_settings("share/inbox"), folder_root=root)

    assert str(raised.value).startswith(
        f"Path 'share/inbox' leads outside the locations folder {str(root)!r}"
    )


def test_folder_symlink_inside_root_allowed(tmp_path: Path) -> None:
    root = tmp_path / "locations"
    write(root / "real" / "a.txt", b"a")
    (root / "alias").symlink_to(root / "real")

    with open_location(folder_settings("alias"), folder_root=root) as location:
        names = [unit.name for unit in location.list_units()]

    assert names == ["a.txt"]


def test_folder_skips_links_and_special_files(tmp_path: Path) -> None:
    root = tmp_path / "locations"
    inbox = root / "inbox"
    write(inbox / "real.txt", b"real")
    write(tmp_path / "secret.txt", b"secret")
    (inbox / "link.txt").symlink_to(tmp_path / "secret.txt")
    (inbox / "linked-folder").symlink_to(tmp_path)
    os.mkfifo(inbox / "pipe")
    write(inbox / "Project" / "inside.txt", b"inside")
    (inbox / "Project" / "escape").symlink_to(tmp_path)
    target = tmp_path / "work"
    target.mkdir()

    with open_location(folder_settings("inbox"), folder_root=root) as location:
        units = location.list_units()
        paths = location.download(unit_named(units, "Project"), target)

    assert [unit.name for unit in units] == ["Project", "real.txt"]
    assert paths == [target / "Project" / "inside.txt"]


def test_folder_download_refuses_swapped_symlink(tmp_path: Path) -> None:
    root = tmp_path / "locations"
    inbox = root / "inbox"
    write(inbox / "Project" / "sub" / "a.txt", b"a")
    write(tmp_path / "private" / "a.txt", b"private data")
    target = tmp_path / "work"
    target.mkdir()

    with open_location(folder_settings("inbox"), folder_root=root) as location:
        unit = unit_named(location.list_units(), "Project")
        # Replace a listed folder with a link to a folder outside, between calls.
        (inbox / "Project" / "sub" / "a.txt").unlink()
        (inbox / "Project" / "sub").rmdir()
        (inbox / "Project" / "sub").symlink_to(tmp_path / "private")
        paths = location.download(unit, target)

    assert paths == []
    assert not any(path.name == "a.txt" for path in target.rglob("*"))


def test_folder_remove_keeps_link_target(tmp_path: Path) -> None:
    root = tmp_path / "locations"
    inbox = root / "inbox"
    write(inbox / "Project" / "a.txt", b"a")
    write(tmp_path / "keep" / "precious.txt", b"precious")
    (inbox / "Project" / "link").symlink_to(tmp_path / "keep")

    with open_location(folder_settings("inbox"), folder_root=root) as location:
        location.remove(unit_named(location.list_units(), "Project"))

    assert not (inbox / "Project").exists()
    assert (tmp_path / "keep" / "precious.txt").read_bytes() == b"precious"


def test_folder_download_cleans_up_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "locations"
    write(root / "inbox" / "Project" / "a.txt", b"a")
    write(root / "inbox" / "Project" / "b.txt", b"b")
    target = tmp_path / "work"
    target.mkdir()
    original = FolderLocation.read_file

    def fail_on_b(self: FolderLocation, path: str, handle: BinaryIO) -> None:
        if path.endswith("b.txt"):
            raise PermissionError(13, "Permission denied")
        original(self, path, handle)

    monkeypatch.setattr(FolderLocation, "read_file", fail_on_b)
    with open_location(folder_settings("inbox"), folder_root=root) as location:
        unit = unit_named(location.list_units(), "Project")
        with pytest.raises(LocationError) as raised:
            location.download(unit, target)

    assert str(raised.value) == (
        f"Could not read 'inbox/Project/b.txt' in the locations folder {str(root)!r}: "
        "permission denied. Check the path setting and the folder's permissions for this user."
    )
    assert os.listdir(target) == []


def test_folder_writer_thread_not_stable(tmp_path: Path) -> None:
    root = tmp_path / "locations"
    path = write(root / "inbox" / "big.bin", b"")
    stop = threading.Event()

    def keep_writing() -> None:
        with path.open("ab") as handle:
            while not stop.is_set():
                handle.write(b"x" * 1024)
                handle.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        with open_location(folder_settings("inbox"), folder_root=root) as location:
            unit = unit_named(location.list_units(), "big.bin")
            assert not location.is_stable(unit, quiet_seconds=QUIET)
    finally:
        stop.set()
        writer.join()


# Settings checked by open_location


def test_unknown_kind_rejected(tmp_path: Path) -> None:
    with pytest.raises(LocationError) as raised:
        open_location(LocationSettings(kind="smb", path="x"), folder_root=tmp_path)

    assert str(raised.value) == "Unknown location kind 'smb': expected one of folder, ftp, sftp."


def test_invalid_port_rejected(tmp_path: Path) -> None:
    settings = LocationSettings(kind="ftp", path="", host="127.0.0.1", port=70000)

    with pytest.raises(LocationError) as raised:
        open_location(settings, folder_root=tmp_path)

    assert str(raised.value) == (
        "Port 70000 is invalid. Check the port setting: expected 1 to 65535."
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"host": None}, "The host setting is empty. Enter the SSH server's host name."),
        ({"username": ""}, "The username setting is empty. Enter the SSH user name."),
        (
            {"password": None, "private_key": None},
            "Neither a password nor a private key is set. Enter one of them for SFTP.",
        ),
    ],
)
def test_sftp_settings_rejected(tmp_path: Path, changes: dict[str, object], expected: str) -> None:
    settings = LocationSettings(
        kind="sftp", path="", host="127.0.0.1", port=2222, username="u", password="p"
    )
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]

    with pytest.raises(LocationError) as raised:
        open_location(settings, folder_root=tmp_path)

    assert str(raised.value) == expected
