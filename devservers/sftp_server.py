"""Run a private OpenSSH sshd on 127.0.0.1 that offers only SFTP, for tests and the demo.

The server has its own configuration, ed25519 host key, authorized_keys file, PID file
and log in a temporary directory, and nothing is read from /etc/ssh/sshd_config. Every
login runs internal-sftp starting in `root`; there is no shell and no forwarding.
`root` is not a chroot, because sshd requires a chroot directory and all of its parents
to be owned by root and writable by nobody else, which a pytest temporary directory
below /tmp is not.

sshd authenticates system accounts, so `user` must exist on this machine, and tests
usually pass the current user. Running as root also needs ``PermitRootLogin``, which the
configuration sets only for that case. The system sshd is never started or touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"
PRIVILEGE_SEPARATION_DIR = Path("/run/sshd")
"""Directory that Debian's sshd is built to chroot its unprivileged processes into."""

START_TIMEOUT = 15.0
"""Seconds to wait for the SSH banner after sshd starts."""
STOP_TIMEOUT = 10.0
"""Seconds to wait for sshd to exit after SIGTERM before sending SIGKILL."""
START_ATTEMPTS = 3
"""Starts to try, each with a new port, when another program took the port meanwhile."""
LOG_TAIL_LINES = 40

# sshd_config splits values at whitespace and expands % tokens in some paths.
_UNSAFE_PATH = re.compile(r"[\s\"'%]")


class SftpServerError(RuntimeError):
    """sshd failed to start or stop."""


class SftpServer:
    """An sshd with its own port and host key, serving `root` over SFTP to one user."""

    host: str = HOST

    def __init__(
        self,
        root: Path,
        user: str,
        password: str | None,
        authorized_key: str | None,
    ) -> None:
        """Prepare a server without starting it.

        `authorized_key` is a public key line ("ssh-ed25519 AAAA...") that may log in
        as `user`. A `password` turns on password authentication, but sshd checks it
        against the account's system password, which this harness does not set. So
        with an account without a password, such as root in a container, password
        logins can only be tested for rejection.
        """
        self.root = Path(root).resolve()
        _validate_config_path(self.root)
        try:
            pwd.getpwnam(user)
        except KeyError as error:
            raise ValueError(
                f"User {user!r} does not exist on this machine; sshd only logs in system "
                "accounts. Pass the current user's name."
            ) from error
        if authorized_key is not None and "\n" in authorized_key.strip():
            raise ValueError("authorized_key must be a single public key line")
        self.user = user
        self.password = password
        self.authorized_key = authorized_key
        self.workdir = Path(tempfile.mkdtemp(prefix="mailroom-sshd-")).resolve()
        _validate_config_path(self.workdir)
        self.config_file = self.workdir / "sshd_config"
        self.host_key_file = self.workdir / "ssh_host_ed25519_key"
        self.authorized_keys_file = self.workdir / "authorized_keys"
        self.pid_file = self.workdir / "sshd.pid"
        self.log_file = self.workdir / "sshd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._generate_host_key()

    @property
    def port(self) -> int:
        if self._port is None:
            raise SftpServerError("sshd is not running; call start() first.")
        return self._port

    @property
    def host_key_line(self) -> str:
        """The server's public key as "ssh-ed25519 AAAA...", without the comment."""
        key_type, key_data, *_comment = self.host_key_file.with_suffix(".pub").read_text().split()
        return f"{key_type} {key_data}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Write the configuration, start `sshd -D` and wait for its SSH banner."""
        if self.running:
            return
        if not os.access(SSHD, os.X_OK):
            raise SftpServerError(
                f"{SSHD} is missing; install OpenSSH's server (apt-get install openssh-server)."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._prepare_privilege_separation_dir()
        self.authorized_keys_file.write_text(
            (self.authorized_key.strip() + "\n") if self.authorized_key else ""
        )

        for attempt in range(1, START_ATTEMPTS + 1):
            self._port = _free_port()
            self.config_file.write_text(self._config())
            self._check_config()
            self.pid_file.unlink(missing_ok=True)
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            with self.log_file.open("ab") as log:
                self._process = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(self.config_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            if self._wait_for_banner():
                logger.info("sshd started on %s:%s (pid %s)", HOST, self._port, self._process.pid)
                return
            output = _read_from(self.log_file, log_offset)
            self._terminate()
            if b"Address already in use" not in output or attempt == START_ATTEMPTS:
                raise SftpServerError(f"sshd did not start.\n{self.diagnostics()}")
            logger.warning("Port %s was taken before sshd could bind it; retrying", self._port)

    def stop(self) -> None:
        """Send SIGTERM to the PID in the PID file, then SIGKILL if sshd does not exit.

        Sessions that are still connected run in their own sshd processes and end
        when their clients disconnect.
        """
        if self._process is None:
            return
        self._terminate()
        logger.info("sshd on %s:%s stopped", HOST, self._port)
        self._port = None

    def cleanup(self) -> None:
        """Stop the server and delete its configuration, keys and log."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def diagnostics(self) -> str:
        lines = _read_from(self.log_file, 0).decode(errors="replace").splitlines()
        return "sshd log (last lines):\n" + "\n".join(lines[-LOG_TAIL_LINES:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    # Helpers

    def _generate_host_key(self) -> None:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailroom-test-sshd", "-f",
             str(self.host_key_file)],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip

    def _prepare_privilege_separation_dir(self) -> None:
        """Create /run/sshd as the openssh-server package's service would, if missing.

        Without an init system nobody creates it, and sshd refuses to start.
        """
        if PRIVILEGE_SEPARATION_DIR.is_dir() or os.geteuid() != 0:
            return
        PRIVILEGE_SEPARATION_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _config(self) -> str:
        is_root = pwd.getpwnam(self.user).pw_uid == 0
        password_auth = "yes" if self.password is not None else "no"
        # Root may log in only because this server listens on loopback alone.
        root_login = "no"
        if is_root:
            root_login = "yes" if self.password is not None else "prohibit-password"
        return f"""\
# Written by devservers/sftp_server.py for one test server.
Port {self._port}
ListenAddress {HOST}
AddressFamily inet
HostKey {self.host_key_file}
PidFile {self.pid_file}
UsePAM no
StrictModes no
PermitRootLogin {root_login}
AllowUsers {self.user}
PubkeyAuthentication yes
AuthorizedKeysFile {self.authorized_keys_file}
PasswordAuthentication {password_auth}
PermitEmptyPasswords no
KbdInteractiveAuthentication no
LoginGraceTime 30
MaxAuthTries 6
Subsystem sftp internal-sftp
ForceCommand internal-sftp -d {self.root}
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTTY no
PermitTunnel no
PermitUserRC no
PrintMotd no
LogLevel VERBOSE
"""

    def _check_config(self) -> None:
        result = subprocess.run(
            [SSHD, "-t", "-f", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise SftpServerError(f"sshd rejected its configuration:\n{result.stderr.strip()}")

    def _wait_for_banner(self) -> bool:
        assert self._process is not None and self._port is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if _banner_received(self._port):
                return True
            time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        pid = _read_pid(self.pid_file) or process.pid
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "sshd (pid %s) ignored SIGTERM for %s s; killing it", pid, STOP_TIMEOUT
                )
                process.kill()
                process.wait(STOP_TIMEOUT)
        self.pid_file.unlink(missing_ok=True)


def _validate_config_path(path: Path) -> None:
    if _UNSAFE_PATH.search(str(path)):
        raise ValueError(
            f"Unsupported directory {str(path)!r}: sshd settings cannot contain whitespace, "
            "quotes or % in this path"
        )


def _free_port() -> int:
    """Return a port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _banner_received(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as connection:
            return connection.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read()
    except FileNotFoundError:
        return b""
