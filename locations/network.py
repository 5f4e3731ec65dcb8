"""Path rules and connection messages that FTP and SFTP share."""

from __future__ import annotations

import errno
import socket

from .base import LocationError


def connection_error(
    error: BaseException, host: str, port: int, timeout: float, protocol: str
) -> LocationError:
    """Return a LocationError that names which of host and port to check, and why."""
    address = f"{host}:{port}"
    if isinstance(error, socket.gaierror):
        return LocationError(
            f"Host name {host!r} could not be resolved ({error.strerror}). Check the host setting."
        )
    refused = getattr(error, "errno", None) == errno.ECONNREFUSED
    if isinstance(error, ConnectionRefusedError) or refused:
        return LocationError(
            f"Connection to {address} was refused. Check the host and port settings, "
            f"and that the {protocol} server is running."
        )
    if isinstance(error, TimeoutError):
        return LocationError(
            f"Connection to {address} timed out after {timeout:g} s. Check the host and port "
            "settings, and that no firewall blocks the connection."
        )
    if isinstance(error, EOFError | ConnectionResetError):
        return LocationError(
            f"The server at {address} closed the connection without responding as an {protocol} "
            "server. Check the port setting."
        )
    if isinstance(error, OSError) and error.strerror:
        return LocationError(
            f"Connection to {address} failed: {error.strerror}. Check the host and port settings."
        )
    return LocationError(
        f"The server at {address} did not respond as an {protocol} server ({error}). "
        "Check the port setting."
    )


def display_remote_path(path: str) -> str:
    """Return `path` without the "./" that joining a name to the login folder adds."""
    return path[2:] if path.startswith("./") else path


def clean_remote_path(path: str) -> str:
    """Normalize the path setting of a server location; "." stands for the login folder."""
    if any(ord(character) < 32 for character in path):
        raise LocationError(f"Path {path!r} contains control characters. Check the path setting.")
    cleaned = path.strip()
    if cleaned in ("", "."):
        return "."
    return cleaned.rstrip("/") or "/"
