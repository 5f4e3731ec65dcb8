"""The notification outbox: rows written with the event, sent by workers.

Sending claims a row with a compare-and-set on its status, so two workers
never send the same row at once. Temporary failures come back with
exponential backoff; permanent ones, or too many attempts, mark it failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import make_msgid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from database import rowcount
from models import OutboxMessage, OutboxStatus

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# A worker that claimed a row and died gives it up after this lease.
CLAIM_LEASE = timedelta(minutes=10)
# Daily sending limits reset within a day; retrying sooner only wastes attempts.
DAILY_LIMIT_DELAY = timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    """Return the wait before the next attempt: 1, 2, 4 ... minutes, at most 2 hours."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 120))


def enqueue(
    session: Session,
    *,
    event: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    reply_to: str | None = None,
    branch_id: int | None = None,
    about_account_id: int | None = None,
) -> OutboxMessage | None:
    """Add a notification to ``session``; the caller's commit makes it real.

    Returns None when there is no recipient, so callers need not check.
    """
    addresses = sorted({address.strip() for address in recipients if address and address.strip()})
    if not addresses:
        return None
    row = OutboxMessage(
        event=event,
        recipients=",".join(addresses),
        subject=subject[:998],
        body=body,
        reply_to=reply_to,
        branch_id=branch_id,
        about_account_id=about_account_id,
        message_id=make_msgid(domain="mailroom.invalid"),
        status=OutboxStatus.PENDING,
        next_attempt_at=datetime.now(UTC),
    )
    session.add(row)
    return row


def due_ids(session: Session, now: datetime, limit: int = 200) -> list[int]:
    """Return pending rows that are due, and rows whose claim lapsed."""
    return list(
        session.scalars(
            sa.select(OutboxMessage.id)
            .where(
                sa.or_(
                    sa.and_(
                        OutboxMessage.status == OutboxStatus.PENDING,
                        OutboxMessage.next_attempt_at <= now,
                    ),
                    sa.and_(
                        OutboxMessage.status == OutboxStatus.SENDING,
                        OutboxMessage.claimed_until < now,
                    ),
                )
            )
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
        )
    )


def claim(session: Session, message_id: int, now: datetime) -> OutboxMessage | None:
    """Mark the row as being sent by this worker, or return None if it is not free."""
    result = session.execute(
        sa.update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            sa.or_(
                sa.and_(
                    OutboxMessage.status == OutboxStatus.PENDING,
                    OutboxMessage.next_attempt_at <= now,
                ),
                sa.and_(
                    OutboxMessage.status == OutboxStatus.SENDING,
                    OutboxMessage.claimed_until < now,
                ),
            ),
        )
        .values(
            status=OutboxStatus.SENDING,
            claimed_until=now + CLAIM_LEASE,
            attempts=OutboxMessage.attempts + 1,
        )
    )
    session.commit()
    if rowcount(result) != 1:
        return None
    return session.get(OutboxMessage, message_id, populate_existing=True)


@dataclass(frozen=True)
class SendResult:
    status: OutboxStatus
    error: str | None = None


def deliver(
    session: Session,
    message_id: int,
    send: Callable[[OutboxMessage], None],
    *,
    now: datetime | None = None,
) -> SendResult | None:
    """Claim the row, call ``send(row)``, and record the outcome.

    ``send`` raises a SendError; its ``temporary`` flag decides between a
    retry and a failure. Returns None when another worker has the row.
    """
    from .smtp import SendError

    now = now or datetime.now(UTC)
    row = claim(session, message_id, now)
    if row is None:
        return None
    try:
        send(row)
    except SendError as exc:
        row.last_error = str(exc)
        if exc.temporary and row.attempts < MAX_ATTEMPTS:
            delay = (
                DAILY_LIMIT_DELAY if "daily sending limit" in str(exc) else backoff(row.attempts)
            )
            row.status = OutboxStatus.PENDING
            row.next_attempt_at = now + delay
            logger.warning(
                "outbox message %s: attempt %s failed, retrying in %s: %s",
                row.id, row.attempts, delay, exc,
            )  # fmt: skip
        else:
            row.status = OutboxStatus.FAILED
            logger.error(
                "outbox message %s failed after %s attempts: %s", row.id, row.attempts, exc
            )
        row.claimed_until = None
        session.commit()
        return SendResult(row.status, row.last_error)
    row.status = OutboxStatus.SENT
    row.sent_at = datetime.now(UTC)
    row.claimed_until = None
    row.last_error = None
    session.commit()
    logger.info("outbox message %s sent to %s", row.id, row.recipients)
    return SendResult(OutboxStatus.SENT)
