"""Start Mailroom on embedded defaults: web, two Celery workers and beat.

Writes a ``.env`` with fresh keys on first use, starts a local Redis when
none answers at REDIS_URL, applies migrations, seeds reference data into a
new database, creates the first admin, then supervises the four processes
until Ctrl-C. One worker runs connector scans, the other beat's ticks and
the notifications (see ``celery_config.py``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
import sqlalchemy as sa
from cryptography.fernet import Fernet

from celery_config import CONTROL_CONCURRENCY, CONTROL_QUEUE, SCANS_QUEUE

BASE_DIR = Path(__file__).resolve().parent
ENV_FILE = BASE_DIR / ".env"
FIRST_ADMIN = "admin@example.com"


def write_env(path: Path) -> bool:
    """Create ``path`` with fresh secrets; keep an existing file untouched."""
    if path.exists():
        return False
    path.write_text(
        "# Written by `make env`. Keep it private: it holds the keys for stored secrets.\n"
        f"SECRET_KEY={secrets.token_urlsafe(48)}\n"
        f"ENCRYPTION_KEYS={Fernet.generate_key().decode()}\n",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return True


def ensure_redis(url: str, instance: Path) -> subprocess.Popen[bytes] | None:
    """Return a Redis process we started, or None when one already answers."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return None
    except redis.RedisError:
        pass
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"Redis does not answer at {url}; start it or fix REDIS_URL")
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(
            f"Redis does not answer at {url} and redis-server is not installed; "
            "install it (apt-get install redis-server) or set REDIS_URL"
        )
    (instance / "redis").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(parts.port or 6379), "--dir",
         str(instance / "redis"), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            print(f"Started Redis at {url} (pid {process.pid}).")
            return process
        except redis.RedisError:
            time.sleep(0.1)
    process.terminate()
    sys.exit(f"The Redis started at {url} did not answer within 10 s")


def prepare_database(database_url: str, admin_password: str | None = None) -> str | None:
    """Migrate, seed a new database, and create the first admin if there is none.

    Returns the new admin's password (``admin_password``, or a generated
    one), or None when an admin already existed.
    """
    import migrations
    from database import Database
    from models import Language, User
    from referencedata import seed
    from web.security import hash_password

    migrations.upgrade(database_url)
    db = Database(database_url)
    with db.session() as session:
        if session.scalar(sa.select(sa.func.count()).select_from(Language)) == 0:
            added = seed(session)
            print(f"Seeded reference data: {added}")
        if session.scalar(sa.select(sa.func.count()).select_from(User).where(User.is_admin)) == 0:
            password = admin_password or secrets.token_urlsafe(12)
            session.add(
                User(email=FIRST_ADMIN, name="Administrator", is_admin=True,
                     password_hash=hash_password(password))
            )  # fmt: skip
            session.commit()
            return password
    db.dispose()
    return None


def worker_command(celery: Path, queue: str, concurrency: int) -> list[str]:
    """Return the command of a Celery worker that consumes only ``queue``.

    The node name carries the queue, so two workers on one host get distinct
    names in Flower and ``celery inspect``.
    """
    return [str(celery), "-A", "worker", "worker", "--loglevel", "INFO", "-E",
            "--queues", queue, "--concurrency", str(concurrency),
            "--hostname", f"{queue}@%h"]  # fmt: skip


def start_app(
    host: str, port: int, concurrency: int, instance: Path, env: dict[str, str] | None = None
) -> list[subprocess.Popen[bytes]]:
    """Start gunicorn, the scan and control workers and Celery beat; return their processes.

    ``concurrency`` is the number of connector runs at once.
    """
    bin_dir = Path(sys.executable).parent
    celery = bin_dir / "celery"
    commands = {
        "web": [str(bin_dir / "gunicorn"), "--bind", f"{host}:{port}",
                "--workers", "2", "--threads", "4", "--access-logfile", "-", "wsgi:app"],
        "scan worker": worker_command(celery, SCANS_QUEUE, concurrency),
        "control worker": worker_command(celery, CONTROL_QUEUE, CONTROL_CONCURRENCY),
        "beat": [str(celery), "-A", "worker", "beat", "--loglevel", "INFO",
                 "--schedule", str(instance / "celerybeat-schedule")],
    }  # fmt: skip
    children = []
    for name, command in commands.items():
        children.append(subprocess.Popen(command, cwd=BASE_DIR, env=env))
        print(f"Started {name} (pid {children[-1].pid}).")
    return children


def supervise(children: list[subprocess.Popen[bytes]]) -> None:
    """Wait until Ctrl-C, SIGTERM or a child exits; then stop every child by its pid."""

    def stop(*_args: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            for child in children:
                if child.poll() is not None:
                    args = child.args if isinstance(child.args, list) else [child.args]
                    name = " ".join(str(arg) for arg in args[:3])
                    message = f"Process {child.pid} ({name}) exited with {child.returncode}"
                    print(f"{message}; stopping the others.", file=sys.stderr)
                    raise KeyboardInterrupt
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


def positive_int(text: str) -> int:
    """Parse a command-line count of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number; enter 1 or more"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1; enter 1 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run Mailroom's web app, Celery beat and two Celery workers together: "
        f"one for connector runs (queue {SCANS_QUEUE}), and one with "
        f"{CONTROL_CONCURRENCY} processes for beat's ticks and notifications "
        f"(queue {CONTROL_QUEUE})."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the web app listens on")
    parser.add_argument("--port", type=int, default=5000, help="web port (default 5000)")
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=2,
        help="connector runs at once: the scan worker's --concurrency (default 2)",
    )
    parser.add_argument(
        "--write-env-only", action="store_true", help="write .env with fresh keys and exit"
    )
    args = parser.parse_args(argv)

    if write_env(ENV_FILE):
        print(f"Wrote {ENV_FILE.name} with a new SECRET_KEY and ENCRYPTION_KEYS.")
    if args.write_env_only:
        return 0

    os.chdir(BASE_DIR)
    from config import ConfigError, load_settings

    try:
        settings = load_settings(ENV_FILE)
    except ConfigError as exc:
        sys.exit(f"Configuration error: {exc}")
    instance = BASE_DIR / "instance"
    instance.mkdir(exist_ok=True)

    children: list[subprocess.Popen[bytes]] = []
    redis_process = ensure_redis(settings.redis_url, instance)
    if redis_process:
        children.append(redis_process)
    password = prepare_database(settings.database_url)

    children += start_app(args.host, args.port, args.concurrency, instance)
    print()
    print(f"Mailroom is running at http://{args.host}:{args.port}/")
    if password:
        print(f"Log in as {FIRST_ADMIN} with the password {password}")
        print("(shown once; set another with `flask --app wsgi users create --admin EMAIL`).")
    else:
        print("Log in with an admin account (`flask --app wsgi users create --admin EMAIL`).")
    print("Press Ctrl-C to stop.")

    supervise(children)
    return 0


if __name__ == "__main__":
    sys.exit(main())
