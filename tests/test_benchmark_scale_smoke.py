"""The connector scale and page latency benchmarks, run end to end at a tiny size.

These prove that both benchmarks work and that their figures add up. They
check no timing, because a shared test machine gives no stable latencies.
"""

from __future__ import annotations

import math
import os
import shutil

import pytest
import sqlalchemy as sa

from benchmarks import connector_scale, page_latency
from devservers.dovecot import find_dovecot

from .servers import require

CONNECTORS = 5
SECONDS = 20
JOBS = 100
CLIENTS = 2
REQUESTS = 20
# The same variable as the postgres_url fixture in tests/servers.py.
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", connector_scale.DEFAULT_POSTGRES_URL)


def _require_postgres() -> None:
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        require(False, f"PostgreSQL does not answer at {engine.url}: {exc.orig}")
    finally:
        engine.dispose()


def _require_redis() -> None:
    require(
        shutil.which("redis-server") is not None,
        "redis-server is not installed (apt-get install redis-server)",
    )


def test_connector_scale_small(capsys: pytest.CaptureFixture[str]) -> None:
    require(find_dovecot() is not None, "Dovecot is not installed (apt-get install dovecot-imapd)")
    _require_redis()
    _require_postgres()

    report = connector_scale.main(
        [
            "--connectors",
            str(CONNECTORS),
            "--minutes",
            str(SECONDS / 60),
            "--starttls",
            "--postgres-url",
            POSTGRES_URL,
        ]
    )

    # First due times are 12 s apart, so the 20 s window contains the first two.
    assert report.due_in_window == 2
    assert report.started_for_due == report.due_in_window
    assert report.unclaimed == 0
    assert report.unmatched_runs == 0
    assert len(report.delays) == report.due_in_window
    assert all(math.isfinite(delay) and delay > 0 for delay in report.delays)
    assert len(report.claim_lags) == report.due_in_window
    assert len(report.queue_lags) == report.started_for_due
    assert all(lag > 0 for lag in report.queue_lags)
    assert report.scans_in_window == sum(report.statuses.values())
    assert report.scans_in_window >= report.started_for_due
    assert report.failures == 0
    assert report.statuses["succeeded"] == report.scans_in_window
    assert len(report.durations) == report.scans_in_window
    assert report.connectors_every_minute == CONNECTORS
    assert report.ticks is not None
    assert report.ticks.sent > 0
    assert report.ticks.run + report.ticks.discarded <= report.ticks.sent + 1
    assert report.cpu_seconds["Celery workers"] > 0

    output = capsys.readouterr().out
    assert "every connector scanned every minute" in output
    assert "start delay: p99" in output


def test_page_latency_small(capsys: pytest.CaptureFixture[str]) -> None:
    _require_redis()
    _require_postgres()

    report = page_latency.main(
        [
            "--connectors",
            str(CONNECTORS),
            "--jobs",
            str(JOBS),
            "--clients",
            str(CLIENTS),
            "--requests",
            str(REQUESTS),
            "--gunicorn-workers",
            "1",
            "--gunicorn-threads",
            "2",
            "--postgres-url",
            POSTGRES_URL,
        ]
    )

    assert report.dataset.jobs == JOBS
    assert report.dataset.projects + report.dataset.quotes == JOBS
    assert [result.page.label for result in report.pages] == [
        "dashboard",
        "connector list",
        "job list, first page",
        "job list, deep page",
        "floor: client search",
    ]
    # 75 projects make two pages of 50; the deep page is the second, reached
    # through the cursor of the 50th project.
    assert report.pages[3].page.path.startswith("/projects?before=")
    for result in report.pages:
        assert result.errors == [], result.page.path
        assert len(result.latencies) == REQUESTS, result.page.path
        assert len(result.solo_latencies) == REQUESTS, result.page.path
        assert all(latency > 0 for latency in result.latencies)
        assert result.seconds > 0
        assert result.rate > 0
        assert result.sql is not None
        assert result.sql.statements > 0, result.page.path
        assert 0 < result.sql.sql_seconds < result.sql.request_seconds

    output = capsys.readouterr().out
    assert output.count("target under 50 ms") == len(report.pages) - 1
    assert "floor /api/clients?q=a: p99 " in output
