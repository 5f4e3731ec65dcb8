"""How many projects and quotes there are, without counting the whole table per request."""

from __future__ import annotations

import json
import logging

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Job, JobKind

logger = logging.getLogger(__name__)

CACHE_KEY = "mailroom:job-counts"
# Jobs are never deleted, so a new job changes the newest id stored with the
# counts. Two transactions can commit their ids out of order and leave a count
# one job short, so the entry also expires.
CACHE_SECONDS = 60


def job_counts(session: Session, cache: redis.Redis) -> dict[JobKind, int]:
    """Return the number of jobs of each kind, counted again only after a job was added."""
    newest = session.scalar(sa.select(sa.func.max(Job.id))) or 0
    try:
        cached = cache.get(CACHE_KEY)
    except redis.RedisError as exc:
        logger.warning("job counts not cached: Redis failed: %s", exc)
        cached = None
    if cached is not None:
        entry = json.loads(cached)
        if entry["newest"] == newest:
            return {JobKind(kind): count for kind, count in entry["counts"].items()}
    rows = session.execute(sa.select(Job.kind, sa.func.count()).group_by(Job.kind)).all()
    counts = {kind: 0 for kind in JobKind} | {kind: count for kind, count in rows}
    entry = {"newest": newest, "counts": {kind.value: count for kind, count in counts.items()}}
    try:
        cache.set(CACHE_KEY, json.dumps(entry), ex=CACHE_SECONDS)
    except redis.RedisError as exc:
        logger.warning("job counts not cached: Redis failed: %s", exc)
    return counts
