"""Peak memory of one connector run over one large message.

Two cases: a message with one 12 MB attachment, and a message with 60
attachments of 200 KB. Each run happens in a fresh spawned process, so the
peak RSS (VmHWM) is the run's own; the figure that matters is how much the
peak grew during the run, compared with the size of the message. A run over
a message with one 10 KB attachment is measured first, as a reference for
what any run costs. It has no target.

Run: ``python -m benchmarks.large_messages``. Exit code 0 whether or not the
target (growth under twice the message) is met.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from email.message import EmailMessage
from pathlib import Path

from benchmarks.connector_throughput import (
    FOLDER,
    MAILBOX_USER,
    create_connector,
    in_child_process,
    mail_servers,
    mailroom_settings,
    private_redis,
    run_mailroom,
)

logger = logging.getLogger("benchmarks.large_messages")
MB = 1_000_000


def big_message(sizes: list[int]) -> bytes:
    message = EmailMessage()
    message["From"] = "client@example.org"
    message["To"] = MAILBOX_USER
    message["Subject"] = f"{len(sizes)} attachments"
    message.set_content("Please translate the attached files.\n")
    for number, size in enumerate(sizes, start=1):
        message.add_attachment(
            os.urandom(size), maintype="application", subtype="octet-stream",
            filename=f"file-{number:02}.bin",
        )  # fmt: skip
    return bytes(message)


REFERENCE = "reference: 10 KB attachment"
CASES = {
    REFERENCE: [10 * 1024],
    "one 12 MB attachment": [12 * 1024 * 1024],
    "60 attachments of 200 KB": [200 * 1024] * 60,
}


def main(argv: Sequence[str] | None = None) -> dict[str, tuple[int, int, int]]:
    parser = argparse.ArgumentParser(
        description="Measure the peak memory of a connector run over one large message."
    )
    parser.parse_args(argv)
    from runtime import build_services

    results: dict[str, tuple[int, int, int]] = {}
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="mailroom-large-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        redis_url = stack.enter_context(private_redis(workdir))
        auth, dovecot = stack.enter_context(mail_servers(workdir))
        settings = mailroom_settings(
            workdir, f"sqlite:///{workdir / 'mailroom.db'}", redis_url, auth, dovecot, 50
        )
        services = build_services(settings)
        stack.callback(services.db.dispose)
        connector_id, _account_id = create_connector(services, dovecot)
        for name, sizes in CASES.items():
            raw = big_message(sizes)
            dovecot.append_many(MAILBOX_USER, [raw], FOLDER)
            run = in_child_process(run_mailroom, settings, connector_id)
            if run.status != "succeeded" or run.measurement.messages != 1:
                raise RuntimeError(f"{name}: the run did not succeed: {run.error or run.problems}")
            growth = run.measurement.peak_rss - run.measurement.rss_before
            results[name] = (len(raw), growth, run.measurement.files)

    print("Large messages: peak RSS growth during one connector run")
    print(f"{'case':<28} {'message':>10} {'growth':>10} {'growth/message':>15} {'jobs':>5}")
    for name, (size, growth, jobs) in results.items():
        # The reference message is tiny, so a ratio to its size would mislead.
        ratio = "" if name == REFERENCE else f"{growth / size:.2f}"
        print(f"{name:<28} {size / MB:>8.1f}MB {growth / MB:>8.1f}MB {ratio:>15} {jobs:>5}")
    for name, (size, growth, _jobs) in results.items():
        if name == REFERENCE:
            continue
        verdict = "PASS" if growth < 2 * size else "FAIL"
        print(f"{verdict} {name}: grew {growth / size:.2f} x the message, target under 2.00")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main()
