"""Start Flower, the Celery monitor, for Mailroom's workers: ``python scripts/flower.py``.

Flower lists workers and tasks and can revoke tasks and resize pools, so this
launcher does not start it without HTTP basic authentication. It listens
on 127.0.0.1:5555 by default; put a TLS proxy in front of it to reach it from
elsewhere.

Environment (a ``.env`` in the repository root is read too, as the app does):

- ``FLOWER_BASIC_AUTH``: ``user:password``, or several separated by commas (required).
- ``FLOWER_URL_PREFIX``: a path prefix such as ``flower`` when a proxy serves
  Flower under ``/flower/`` (optional).
- ``REDIS_URL`` and the app's other settings: Flower loads the Celery app from
  ``worker.py``, which takes its broker from ``REDIS_URL``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dotenv import load_dotenv

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5555


def basic_auth_problem(value: str) -> str | None:
    """Return why ``value`` is not a usable FLOWER_BASIC_AUTH, or None when it is."""
    if not value.strip():
        return "FLOWER_BASIC_AUTH is not set"
    for entry in value.split(","):
        user, _, password = entry.partition(":")
        if not user or not password:
            return "FLOWER_BASIC_AUTH must be user:password (several separated by commas)"
    return None


def flower_command(address: str, port: int, url_prefix: str) -> list[str]:
    """Build the ``celery flower`` command line.

    The credentials stay out of it: Flower reads FLOWER_BASIC_AUTH from the
    environment itself, and a command line is visible to every local user.
    """
    command = [
        sys.executable, "-m", "celery", "-A", "worker", "flower",
        f"--address={address}", f"--port={port}", "--persistent=False",
    ]  # fmt: skip
    if url_prefix:
        command.append(f"--url_prefix={url_prefix.strip('/')}")
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run Flower for Mailroom's Celery workers, with basic authentication."
    )
    parser.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"address to listen on (default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})"
    )
    args = parser.parse_args(argv)

    # `-A worker` imports worker.py from the repository root, and the app
    # reads the .env there, so read the same file for FLOWER_BASIC_AUTH.
    os.chdir(ROOT)
    load_dotenv(ROOT / ".env", override=False)
    problem = basic_auth_problem(os.environ.get("FLOWER_BASIC_AUTH", ""))
    if problem:
        print(
            f"{problem}; Flower can revoke tasks and resize worker pools, so it does not start "
            "without a login. Set FLOWER_BASIC_AUTH=user:password in the environment or .env.",
            file=sys.stderr,
        )
        return 2

    sys.path.insert(0, str(ROOT))
    from config import ConfigError, load_settings

    try:
        load_settings(ROOT / ".env")
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2

    command = flower_command(args.address, args.port, os.environ.get("FLOWER_URL_PREFIX", ""))
    # Replace this process, so a supervisor's signals reach Flower directly.
    os.execv(command[0], command)  # noqa: S606 - a fixed argument list, no shell


if __name__ == "__main__":
    sys.exit(main())
