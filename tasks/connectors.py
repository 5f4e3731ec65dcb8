"""Scheduling and running Smart Connectors."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from celery import shared_task
from flask import current_app

from intake import run_connector
from intake.preview import take_selection
from intake.run import run_in_progress
from intake.schedule import claim_due_connectors
from logconfig import task_id_var
from runtime import Services

logger = logging.getLogger(__name__)

BEAT_TICK_KEY = "mailroom:beat:last-tick"
WORKER_DONE_KEY = "mailroom:worker:last-task-done"
# Process again waits for a run in progress by retrying 20 times this many
# seconds apart, which covers ten minutes.
PROCESS_AGAIN_RETRY_SECONDS = 30


def _services() -> Services:
    services: Services = current_app.extensions["mailroom"]
    return services


@shared_task(name="mailroom.connectors.enqueue_due", ignore_result=True, time_limit=60)
def enqueue_due() -> int:
    """Enqueue a scan for every active connector whose next run is due."""
    services = _services()
    now = datetime.now(UTC)
    with services.db.session() as session:
        claimed = claim_due_connectors(session, now)
    # Enqueue only after the claim committed, so a scan never sees old state.
    for connector_id in claimed:
        scan.apply_async(args=(connector_id, "schedule"), expires=600)
    services.redis.set(BEAT_TICK_KEY, str(time.time()))
    if claimed:
        logger.info("enqueued %d due connectors: %s", len(claimed), claimed)
    return len(claimed)


@shared_task(
    name="mailroom.connectors.scan",
    bind=True,
    ignore_result=True,
    # A stuck server must not hold a worker forever; the run lock is renewed
    # per batch and lapses after ten minutes without progress.
    soft_time_limit=25 * 60,
    time_limit=30 * 60,
)
def scan(  # type: ignore[no-untyped-def]
    self,
    connector_id: int,
    trigger: str = "schedule",
    test_token: str | None = None,
    failure_id: int | None = None,
) -> str | None:
    """Run one connector now; skipped if a run of it is already going on.

    ``test_token`` names a Test Connector preview: only its messages are processed.
    ``failure_id`` names a quarantined message in the quarantine folder: only
    that message is processed (Process again).
    """
    token = task_id_var.set(self.request.id)
    try:
        services = _services()
        ctx = services.intake_context()
        only = None
        if test_token is not None:
            only = take_selection(ctx, connector_id, test_token)
            if only is None:
                logger.warning("test selection of connector %s expired or was used", connector_id)
                return None
        outcome = run_connector(ctx, connector_id, trigger, only=only, quarantined=failure_id)
        if outcome is None and failure_id is not None and run_in_progress(ctx, connector_id):
            # Process again was clicked during a run: try again once that run has ended.
            raise self.retry(countdown=PROCESS_AGAIN_RETRY_SECONDS, max_retries=20)
        services.redis.set(WORKER_DONE_KEY, str(time.time()))
        return outcome.status.value if outcome else None
    finally:
        task_id_var.reset(token)
