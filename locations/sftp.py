"""SFTP locations, with paramiko.

The server's host key must match the known host key setting before any credential is
sent. An empty setting is rejected too, with the fingerprint that the server sent, so
an administrator can compare it with the server's key and paste the key line.
The agent and the key files of the user running Mailroom are never used.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import posixpath
import secrets
import stat
from collections.abc import Iterator
from typing import BinaryIO

import paramiko

from .base import (
    DEFAULT_PORTS,
    TEMPORARY_PREFIX,
    Entry,
    EntryKind,
    LocationError,
    LocationSettings,
    TreeLocation,
)
from .network import clean_remote_path, connection_error, display_remote_path

_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


def describe_key(key: paramiko.PKey) -> str:
    """Return a key's type and SHA256 fingerprint as ssh-keygen -l shows them."""
    return f"{key.get_name()} {key.fingerprint}"


def parse_host_key(line: str) -> paramiko.PKey:
    """Parse "TYPE BASE64 [comment]", or a known_hosts line with host names in front."""
    tokens = line.split()
    for index, token in enumerate(tokens[:-1]):
        try:
            blob = base64.b64decode(tokens[index + 1], validate=True)
            return paramiko.PKey.from_type_string(token, blob)
        except (binascii.Error, ValueError, paramiko.SSHException):
            continue
    raise LocationError(
        "The known host key setting is not a valid public key line. Paste the server's "
        "public key, such as 'ssh-ed25519 AAAA...' from /etc/ssh/ssh_host_ed25519_key.pub "
        "on the server."
    )


def load_private_key(text: str) -> paramiko.PKey:
    """Load an unencrypted Ed25519, ECDSA or RSA private key in OpenSSH or PEM format."""
    for key_class in _KEY_CLASSES:
        try:
            return key_class.from_private_key(io.StringIO(text))
        except paramiko.PasswordRequiredException as error:
            raise LocationError(
                "The private key setting contains a key encrypted with a passphrase. Enter "
                "the key without a passphrase (ssh-keygen -p -N '' -f KEYFILE removes it)."
            ) from error
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise LocationError(
        "The private key setting is not a valid Ed25519, ECDSA or RSA private key. Paste the "
        "whole key file, from the BEGIN line to the END line."
    )


class _RejectUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Reject every server when the known host key setting is empty, showing its key."""

    def __init__(self, address: str) -> None:
        self.address = address

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise LocationError(
            f"The known host key setting is empty, so the server at {self.address} cannot be "
            f"trusted. It sent the host key {describe_key(key)}. Compare that with the "
            "server's key (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the server), "
            "then paste the server's public key line into the known host key setting."
        )


class SftpLocation(TreeLocation):
    """A folder on an SSH server. Relative paths start at the login folder."""

    def __init__(self, settings: LocationSettings) -> None:
        super().__init__(settings, clean_remote_path(settings.path))
        if not settings.host:
            raise LocationError("The host setting is empty. Enter the SSH server's host name.")
        if not settings.username:
            raise LocationError("The username setting is empty. Enter the SSH user name.")
        if not settings.password and not settings.private_key:
            raise LocationError(
                "Neither a password nor a private key is set. Enter one of them for SFTP."
            )
        self.host = settings.host
        self.port = settings.port or DEFAULT_PORTS["sftp"]
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def where(self) -> str:
        return f"on {self.host}:{self.port}"

    def display_path(self, path: str) -> str:
        return display_remote_path(path)

    # Connection

    def connect(self) -> None:
        if self._sftp is not None:
            return
        settings = self.settings
        address = f"{self.host}:{self.port}"
        private_key = load_private_key(settings.private_key) if settings.private_key else None

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_RejectUnknownHostKey(address))
        expected = None
        if settings.known_host_key and settings.known_host_key.strip():
            expected = parse_host_key(settings.known_host_key)
            # paramiko looks keys up under "[host]:port" unless the port is 22.
            host_name = f"[{self.host}]:{self.port}"
            if self.port == DEFAULT_PORTS["sftp"]:
                host_name = self.host
            client.get_host_keys().add(host_name, expected.get_name(), expected)

        try:
            client.connect(
                self.host,
                port=self.port,
                username=settings.username,
                password=settings.password or None,
                pkey=private_key,
                timeout=settings.timeout,
                banner_timeout=settings.timeout,
                auth_timeout=settings.timeout,
                channel_timeout=settings.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(settings.timeout)
        except LocationError:
            client.close()
            raise
        except paramiko.BadHostKeyException as error:
            client.close()
            raise LocationError(
                f"The host key of {address} does not match the known host key setting. The "
                f"server sent {describe_key(error.key)}, but the setting contains "
                f"{describe_key(error.expected_key)}. If the server's key was replaced on "
                "purpose, paste its new public key line into the known host key setting; "
                "otherwise someone may be intercepting the connection."
            ) from error
        except paramiko.AuthenticationException as error:
            client.close()
            raise LocationError(self._login_message()) from error
        except paramiko.ssh_exception.NoValidConnectionsError as error:
            client.close()
            first = next(iter(error.errors.values()))
            raise connection_error(first, self.host, self.port, settings.timeout, "SSH") from error
        except paramiko.SSHException as error:
            client.close()
            raise self._protocol_error(error) from error
        except (OSError, EOFError) as error:
            client.close()
            raise connection_error(error, self.host, self.port, settings.timeout, "SSH") from error
        self._client = client
        self._sftp = sftp

    def _login_message(self) -> str:
        settings = self.settings
        if settings.private_key and settings.password:
            credentials = "password and private key"
        elif settings.private_key:
            credentials = "private key"
        else:
            credentials = "password"
        message = (
            f"Login as {settings.username!r} {self.where()} was rejected. Check the username "
            f"and {credentials} settings"
        )
        if settings.private_key:
            message += ", and that the user's authorized_keys file on the server has the public key"
        return message + "."

    def _protocol_error(self, error: paramiko.SSHException) -> LocationError:
        text = str(error)
        if "banner" in text.lower():
            return LocationError(
                f"The server at {self.host}:{self.port} did not respond as an SSH server "
                f"({text}). Check the port setting."
            )
        if "subsystem" in text.lower() or "channel" in text.lower():
            return LocationError(
                f"The SSH server {self.where()} does not offer SFTP to this user ({text}). "
                "Enable the sftp subsystem on the server."
            )
        return LocationError(f"The SSH connection {self.where()} failed: {text}.")

    def close(self) -> None:
        sftp, self._sftp = self._sftp, None
        client, self._client = self._client, None
        if sftp is not None:
            sftp.close()
        if client is not None:
            client.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        self.connect()
        assert self._sftp is not None
        return self._sftp

    @contextlib.contextmanager
    def native_errors(self) -> Iterator[None]:
        """Pass on paramiko's OSErrors, and close a connection that broke."""
        try:
            yield
        except (TimeoutError, ConnectionError):
            self.close()
            raise
        except (paramiko.SSHException, EOFError) as error:
            self.close()
            raise OSError(str(error) or "the server closed the connection") from error

    # Primitives

    def list_entries(self, directory: str) -> list[Entry]:
        return [
            _entry(attributes.filename, attributes)
            for attributes in self.sftp.listdir_attr(directory)
        ]

    def stat_entry(self, path: str) -> Entry | None:
        try:
            attributes = self.sftp.lstat(path)
        except FileNotFoundError:
            return None
        return _entry(posixpath.basename(path), attributes)

    def read_file(self, path: str, target: BinaryIO) -> None:
        self.sftp.getfo(path, target)

    def store_new(self, source: BinaryIO, directory: str, name: str) -> bool:
        """Upload to a hidden temporary name, then rename it to `name`.

        SFTP's rename (version 3, as OpenSSH implements it) fails when the new name
        exists, so no file is replaced and readers never see a partly written file.
        """
        final = posixpath.join(directory, name)
        if self.stat_entry(final) is not None:
            return False
        temporary = posixpath.join(directory, f"{TEMPORARY_PREFIX}upload-{secrets.token_hex(8)}")
        self.sftp.putfo(source, temporary, confirm=True)
        try:
            self.sftp.rename(temporary, final)
        except OSError:
            self.sftp.remove(temporary)
            if self.stat_entry(final) is None:
                raise
            return False
        return True

    def make_dir(self, path: str) -> None:
        try:
            self.sftp.mkdir(path)
        except OSError:
            entry = self.stat_entry(path)
            if entry is None or entry.kind != "dir":
                raise

    def delete_file(self, path: str) -> None:
        self.sftp.remove(path)

    def delete_dir(self, path: str) -> None:
        self.sftp.rmdir(path)


def _entry(name: str, attributes: paramiko.SFTPAttributes) -> Entry:
    mode = attributes.st_mode or 0
    kind: EntryKind = "other"
    if stat.S_ISDIR(mode):
        kind = "dir"
    elif stat.S_ISREG(mode):
        kind = "file"
    size = (attributes.st_size or 0) if kind == "file" else 0
    return Entry(name, kind, size, float(attributes.st_mtime or 0))
