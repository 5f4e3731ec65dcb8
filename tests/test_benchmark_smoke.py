"""The connector throughput benchmark, run end to end on a small folder.

This proves that the benchmark works and that its figures add up. It checks no
timing, because a shared test machine gives no stable rates.
"""

from __future__ import annotations

import shutil

import pytest

from benchmarks.connector_throughput import main
from devservers.dovecot import find_dovecot

from .servers import require

MESSAGES = 20
SIZE_KB = 10


def test_benchmark_small_folder(capsys: pytest.CaptureFixture[str]) -> None:
    require(find_dovecot() is not None, "Dovecot is not installed (apt-get install dovecot-imapd)")
    require(
        shutil.which("redis-server") is not None,
        "redis-server is not installed (apt-get install redis-server)",
    )

    report = main(["--messages", str(MESSAGES), "--size-kb", str(SIZE_KB)])

    assert len(report.repetitions) == 1
    repetition = report.repetitions[0]
    assert repetition.mailroom.messages == MESSAGES
    assert repetition.jobs_in_database == MESSAGES
    assert repetition.left_after_mailroom == 0
    assert repetition.bare.messages == MESSAGES
    assert repetition.bare.files == MESSAGES
    assert repetition.left_after_bare == 0
    assert repetition.mailroom.seconds > 0
    assert repetition.bare.seconds > 0
    assert repetition.mailroom.cpu_seconds > 0
    assert repetition.bare.cpu_seconds > 0
    assert repetition.ratio > 0
    assert repetition.mailroom.peak_rss >= repetition.mailroom.rss_before > 0
    assert repetition.bare.peak_rss >= repetition.bare.rss_before > 0
    assert 0.8 * SIZE_KB * 1024 < report.largest_message < 1.2 * SIZE_KB * 1024

    output = capsys.readouterr().out
    assert "throughput: Mailroom/bare" in output
    assert "memory: Mailroom peak RSS" in output
