"""Messages that keep failing: counted per run, quarantined after a limit."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from database import rowcount
from extraction import MessageInfo
from models import MessageFailure

DEFAULT_MAX_ATTEMPTS = 3


def quarantined_uids(session: Session, connector_id: int, uidvalidity: int) -> set[int]:
    return set(
        session.scalars(
            sa.select(MessageFailure.uid).where(
                MessageFailure.connector_id == connector_id,
                MessageFailure.uidvalidity == uidvalidity,
                MessageFailure.quarantined_at.is_not(None),
            )
        )
    )


def record_failure(
    session: Session,
    *,
    connector_id: int,
    uidvalidity: int,
    uid: int,
    info: MessageInfo | None,
    reason: str,
    max_attempts: int,
    now: datetime,
) -> bool:
    """Count one more failed attempt; return True when this one quarantines it."""
    row = session.scalars(
        sa.select(MessageFailure).where(
            MessageFailure.connector_id == connector_id,
            MessageFailure.uidvalidity == uidvalidity,
            MessageFailure.uid == uid,
        )
    ).one_or_none()
    if row is None:
        row = MessageFailure(
            connector_id=connector_id,
            uidvalidity=uidvalidity,
            uid=uid,
            first_seen_at=now,
            attempts=0,
        )
        session.add(row)
    row.attempts += 1
    row.last_error = reason
    row.last_seen_at = now
    if info is not None:
        row.message_id = info.message_id[:998] if info.message_id else None
        row.sender = info.sender[:998] if info.sender else None
        row.subject = info.subject
    newly_quarantined = row.quarantined_at is None and row.attempts >= max_attempts
    if newly_quarantined:
        row.quarantined_at = now
    return newly_quarantined


def clear_failures(session: Session, connector_id: int, uidvalidity: int, uids: list[int]) -> None:
    if uids:
        session.execute(
            sa.delete(MessageFailure).where(
                MessageFailure.connector_id == connector_id,
                MessageFailure.uidvalidity == uidvalidity,
                MessageFailure.uid.in_(uids),
            )
        )


def release(session: Session, connector_id: int, failure_id: int) -> bool:
    """Forget a quarantined message's failures so the next run tries it again."""
    result = session.execute(
        sa.delete(MessageFailure).where(
            MessageFailure.id == failure_id, MessageFailure.connector_id == connector_id
        )
    )
    return bool(rowcount(result))


def get_failure(session: Session, connector_id: int, failure_id: int) -> MessageFailure | None:
    failure = session.get(MessageFailure, failure_id)
    if failure is None or failure.connector_id != connector_id:
        return None
    return failure


def mark_moving(
    session: Session, connector_id: int, uidvalidity: int, uids: list[int], folder: str
) -> None:
    """Record that ``uids`` are about to move to ``folder``; the caller commits before the move.

    A process that dies during the move leaves the folder recorded, so
    Process again looks for the message there.
    """
    _set_moved_to(session, connector_id, uidvalidity, uids, folder)


def clear_moving(session: Session, connector_id: int, uidvalidity: int, uids: list[int]) -> None:
    """Forget a move that failed, because the messages are still in the scanned folder."""
    _set_moved_to(session, connector_id, uidvalidity, uids, None)


def _set_moved_to(
    session: Session, connector_id: int, uidvalidity: int, uids: list[int], folder: str | None
) -> None:
    session.execute(
        sa.update(MessageFailure)
        .where(
            MessageFailure.connector_id == connector_id,
            MessageFailure.uidvalidity == uidvalidity,
            MessageFailure.uid.in_(uids),
        )
        .values(moved_to_folder=folder, moved_uidvalidity=None, moved_uid=None)
    )


def record_moved(
    session: Session,
    connector_id: int,
    uidvalidity: int,
    moved: dict[int, int],
    moved_uidvalidity: int,
) -> None:
    """Store each message's UID in the quarantine folder, keyed by its UID in the scanned folder."""
    for uid, moved_uid in moved.items():
        session.execute(
            sa.update(MessageFailure)
            .where(
                MessageFailure.connector_id == connector_id,
                MessageFailure.uidvalidity == uidvalidity,
                MessageFailure.uid == uid,
            )
            .values(moved_uidvalidity=moved_uidvalidity, moved_uid=moved_uid)
        )
