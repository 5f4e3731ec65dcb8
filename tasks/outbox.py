"""Sending the notification outbox."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import shared_task
from flask import current_app

from outgoing.outbox import deliver, due_ids
from runtime import Services

logger = logging.getLogger(__name__)


def _services() -> Services:
    services: Services = current_app.extensions["mailroom"]
    return services


@shared_task(name="mailroom.outbox.dispatch", ignore_result=True, time_limit=60)
def dispatch() -> int:
    """Enqueue a send for every outbox message that is due."""
    with _services().db.session() as session:
        ids = due_ids(session, datetime.now(UTC))
    for message_id in ids:
        send.apply_async(args=(message_id,), expires=300)
    return len(ids)


@shared_task(
    name="mailroom.outbox.send",
    ignore_result=True,
    # One SMTP conversation; the mail timeout bounds each step of it.
    soft_time_limit=240,
    time_limit=300,
)
def send(message_id: int) -> str | None:
    """Send one outbox message; a row another worker holds is left alone."""
    services = _services()
    with services.db.session() as session:
        result = deliver(
            session, message_id, lambda row: services.mailer.send_outbox_row(session, row)
        )
    if result is None:
        logger.info("outbox message %s is not due or is being sent elsewhere", message_id)
        return None
    return result.status.value
