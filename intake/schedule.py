"""Which connectors are due, claimed so that each tick enqueues a run once."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from database import rowcount
from models import AuthMethod, Connector, MailAccount, SourceLocation, TokenStatus

from .schedules import next_run, parse_schedule


def next_run_after(
    interval_minutes: int, now: datetime, weekly: dict[str, object] | None = None
) -> datetime:
    """Return the next due time: chosen days and times when set, else every N minutes."""
    if weekly:
        return next_run(parse_schedule(weekly), now)
    return now + timedelta(minutes=interval_minutes)


def claim_due_connectors(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Move every due connector's ``next_run_at`` forward and return their ids.

    Each claim is a compare-and-set on the old ``next_run_at``, so two beats,
    or a tick that overlaps a slow one, never claim the same run twice. The
    caller enqueues the returned ids after this commits.
    """
    # An OAuth2 connector whose account never got consent waits for it; it
    # becomes due at once when the token arrives.
    waiting_for_consent = sa.and_(
        Connector.source_location == SourceLocation.EMAIL,
        Connector.auth_method == AuthMethod.OAUTH2,
        sa.or_(MailAccount.id.is_(None), MailAccount.token_status == TokenStatus.NONE),
    )
    due = session.execute(
        sa.select(
            Connector.id,
            Connector.next_run_at,
            Connector.interval_minutes,
            Connector.weekly_schedule,
        )
        .outerjoin(MailAccount, Connector.mail_account_id == MailAccount.id)
        .where(
            Connector.active.is_(True),
            Connector.next_run_at.is_not(None),
            Connector.next_run_at <= now,
            sa.not_(waiting_for_consent),
        )
        .order_by(Connector.next_run_at)
        .limit(limit)
    ).all()
    claimed = []
    for connector_id, due_at, interval, weekly in due:
        result = session.execute(
            sa.update(Connector)
            .where(Connector.id == connector_id, Connector.next_run_at == due_at)
            .values(next_run_at=next_run_after(interval, now, weekly))
        )
        if rowcount(result) == 1:
            claimed.append(connector_id)
    session.commit()
    return claimed
