"""Remote file locations: where a Smart Connector takes input files and stores copies.

A location is a folder under FILES_ROOT/locations, a folder on an FTP or FTPS server,
or a folder on an SFTP server. Open one with `open_location` in a ``with`` block, so
its connection is closed::

    with open_location(settings, folder_root=files_root / "locations") as location:
        for unit in location.list_units():
            if location.is_stable(unit, quiet_seconds=30):
                paths = location.download(unit, work_dir)

Every failure is a `LocationError` whose message names the setting to fix.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from .base import KINDS, Location, LocationError, LocationSettings, Unit


def open_location(
    settings: LocationSettings,
    *,
    folder_root: Path,
    ssl_context: ssl.SSLContext | None = None,
) -> Location:
    """Return the location that `settings` describe, without connecting yet.

    The connection opens on the first call and closes when the ``with`` block ends.
    `folder_root` is the directory that "folder" paths are relative to. `ssl_context`
    verifies FTPS servers; the default trusts the system's certificate authorities.
    Invalid settings raise LocationError here.
    """
    if settings.port is not None and not 0 < settings.port < 65536:
        raise LocationError(
            f"Port {settings.port} is invalid. Check the port setting: expected 1 to 65535."
        )
    if not settings.timeout > 0:
        raise LocationError(f"Timeout {settings.timeout!r} is invalid: expected a positive number.")
    if settings.kind == "folder":
        from .local import FolderLocation

        return FolderLocation(settings, folder_root)
    if settings.kind == "ftp":
        from .ftp import FtpLocation

        return FtpLocation(settings, ssl_context)
    if settings.kind == "sftp":
        from .sftp import SftpLocation

        return SftpLocation(settings)
    raise LocationError(
        f"Unknown location kind {settings.kind!r}: expected one of {', '.join(KINDS)}."
    )


__all__ = ["KINDS", "Location", "LocationError", "LocationSettings", "Unit", "open_location"]
