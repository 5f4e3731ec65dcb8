"""Run a pyftpdlib FTP server on 127.0.0.1 in a background thread, for tests and the demo.

With a certificate the server offers explicit FTPS and requires it: a client must send
AUTH TLS before logging in and PROT P before any transfer. All users share `root` as
their home folder.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

# pyftpdlib 2.x runs on the standard library's asyncore and asynchat before Python 3.12,
# and their import warns that they are deprecated.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r"The async(ore|hat) module is deprecated", category=DeprecationWarning
    )
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

from devservers.certs import CertificatePaths

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
READ_WRITE = "elradfmwMT"
"""pyftpdlib permissions: list, change folder, read, append, delete, rename, create folder,
write, change mode and change time."""
READ_ONLY = "elr"
POLL_INTERVAL = 0.05
"""Seconds the server thread waits for socket events before it checks for a stop request."""
STOP_TIMEOUT = 10.0
"""Seconds to wait for the server thread to finish after a stop request."""
IDLE_TIMEOUT = 60
"""Seconds after which the server closes an idle control connection."""


class FtpServer:
    """An FTP server with its own port, users and optional TLS certificate."""

    host: str = HOST

    def __init__(
        self,
        root: Path,
        users: dict[str, str],
        tls_cert: CertificatePaths | None = None,
        *,
        read_only_users: Iterable[str] = (),
        mlst: bool = True,
    ) -> None:
        """Prepare a server without starting it.

        `users` maps user names to passwords. Users in `read_only_users` may list and
        download but not change anything. With `mlst` False the server neither offers
        nor accepts MLST and MLSD, like vsftpd, so clients must fall back to NLST.
        """
        self.root = Path(root).resolve()
        self.users = dict(users)
        self.tls_cert = tls_cert
        self.read_only_users = set(read_only_users)
        unknown = self.read_only_users - self.users.keys()
        if unknown:
            raise ValueError(f"read_only_users {sorted(unknown)} are missing from users")
        self.mlst = mlst
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("The FTP server is not running; call start() first.")
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        if self.running:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        # A private IOLoop, because pyftpdlib's shared one would mix the sockets of
        # several servers in one process.
        server = FTPServer((HOST, 0), self._handler_class(), ioloop=IOLoop())
        self._server = server
        self._port = int(server.address[1])
        self._stop_requested.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"ftp-server-{self._port}", daemon=True
        )
        self._thread.start()
        logger.info("FTP server started on %s:%s (TLS: %s)", HOST, self._port, bool(self.tls_cert))

    def stop(self) -> None:
        """Close every connection and wait for the server thread to end."""
        thread = self._thread
        if thread is None:
            return
        self._stop_requested.set()
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"The FTP server thread did not stop within {STOP_TIMEOUT} s.")
        self._thread = None
        self._server = None
        logger.info("FTP server on %s:%s stopped", HOST, self._port)
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        try:
            # One poll per round, because serve_forever(blocking=False) logs a start
            # message every time it is called.
            while not self._stop_requested.is_set():
                server.ioloop.loop(timeout=POLL_INTERVAL, blocking=False)
        finally:
            server.close_all()

    def _handler_class(self) -> type[FTPHandler]:
        """Build a handler class for this server only, since pyftpdlib configures through
        class attributes."""
        authorizer = DummyAuthorizer()
        for user, password in self.users.items():
            permissions = READ_ONLY if user in self.read_only_users else READ_WRITE
            authorizer.add_user(user, password, str(self.root), perm=permissions)

        base: type[FTPHandler] = FTPHandler
        attributes: dict[str, Any] = {
            "authorizer": authorizer,
            "banner": "Mailroom test FTP server ready.",
            "timeout": IDLE_TIMEOUT,
            "permit_foreign_addresses": False,
        }
        if self.tls_cert is not None:
            base = TLS_FTPHandler
            attributes.update(
                certfile=str(self.tls_cert.cert),
                keyfile=str(self.tls_cert.key),
                ssl_context=None,
                tls_control_required=True,
                tls_data_required=True,
            )
        if not self.mlst:
            attributes["proto_cmds"] = {
                command: spec
                for command, spec in base.proto_cmds.items()
                if command not in ("MLST", "MLSD")
            }
        return type("MailroomTestFtpHandler", (base,), attributes)
