"""Projects and quotes: lists, the job page and file downloads."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, render_template, request, send_file
from flask_login import login_required
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from models import Client, Connector, Job, JobFile, JobKind, Language
from models.jobs import job_target_languages
from runtime import Services

from .counts import job_counts
from .db import db_session

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__)

JOBS_PER_PAGE = 50
KIND_TITLES = {JobKind.PROJECT: "Projects", JobKind.QUOTE: "Quotes"}

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; ``number`` counts from 1."""

    items: Sequence[T]
    number: int
    per_page: int
    total: int

    @property
    def page_count(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.page_count

    @property
    def first_index(self) -> int:
        """Position of the first item on this page in the whole list, from 1."""
        return (self.number - 1) * self.per_page + 1 if self.items else 0


def requested_page_number() -> int:
    """Read ``?page=``. Text that is not a number means page 1, and a number below 1 is a 404."""
    number = request.args.get("page", default=1, type=int)
    if number < 1:
        abort(404)
    return number


def paginate(session: Session, statement: sa.Select[Any], number: int, per_page: int) -> Page[Any]:
    """Run ``statement`` for one page and count all its rows. A page past the end is a 404."""
    total = session.scalar(
        sa.select(sa.func.count()).select_from(statement.order_by(None).subquery())
    )
    page: Page[Any] = Page(items=[], number=number, per_page=per_page, total=total or 0)
    if number > page.page_count:
        abort(404)
    rows = session.execute(statement.limit(per_page).offset((number - 1) * per_page)).all()
    return Page(items=rows, number=number, per_page=per_page, total=page.total)


def _services() -> Services:
    services: Services = current_app.extensions["mailroom"]
    return services


@dataclass(frozen=True)
class JobListPage:
    """One page of a job list, newest first, with cursors to its neighbours.

    The cursors are job ids: ``?before=ID`` shows the jobs older than that
    job, ``?after=ID`` the ones newer. Unlike ``?page=N``, a cursor costs the
    same on the last page as on the first.
    """

    rows: Sequence[JobRow]
    total: int
    newer_than: int | None
    older_than: int | None


def _cursor(name: str) -> int | None:
    value = request.args.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        abort(404)
    return int(value)


def job_list_page(
    session: Session, kind: JobKind, total: int, *, before: int | None, after: int | None
) -> JobListPage:
    """Return the page of ``kind`` jobs older than ``before`` or newer than ``after``."""
    position = sa.tuple_(Job.created_at, Job.id)
    newest_first = (Job.created_at.desc(), Job.id.desc())
    statement = sa.select(Job.id).where(Job.kind == kind).limit(JOBS_PER_PAGE + 1)

    cursor_id = before if before is not None else after
    if cursor_id is not None:
        anchor = session.execute(
            sa.select(Job.created_at, Job.id).where(Job.id == cursor_id, Job.kind == kind)
        ).first()
        if anchor is None:
            abort(404)
        anchor_position = sa.tuple_(sa.literal(anchor.created_at, Job.created_at.type), anchor.id)

    if before is not None:
        statement = statement.where(position < anchor_position).order_by(*newest_first)
    elif after is not None:
        statement = statement.where(position > anchor_position).order_by(Job.created_at, Job.id)
    else:
        statement = statement.order_by(*newest_first)

    ids = list(session.scalars(statement))
    more = len(ids) > JOBS_PER_PAGE
    ids = ids[:JOBS_PER_PAGE]
    if after is not None:
        if not more:
            # Fewer than a page of newer jobs: show the newest page, a full one.
            return job_list_page(session, kind, total, before=None, after=None)
        ids.reverse()
    rows = job_rows(session, ids)
    first_page = before is None and after is None
    return JobListPage(
        rows=rows,
        total=total,
        newer_than=None if first_page or not ids else ids[0],
        older_than=ids[-1] if ids and (more or after is not None) else None,
    )


@dataclass(frozen=True)
class JobRow:
    """One line of a job list, read as plain columns without loading ORM objects."""

    id: int
    name: str
    client_name: str
    connector_id: int | None
    connector_name: str | None
    source_code: str | None
    target_codes: list[str]
    files_count: int
    source_sender: str | None
    source_subject: str | None
    source_date: datetime | None
    created_at: datetime


def job_rows(session: Session, ids: list[int]) -> list[JobRow]:
    """Return the list lines of the jobs in ``ids``, in that order.

    Plain rows instead of ORM objects with their relationships: this is the
    page people open most, and loading objects took most of its time.
    """
    if not ids:
        return []
    source = sa.orm.aliased(Language)
    lines = session.execute(
        sa.select(
            Job.id,
            Job.name,
            Client.name.label("client_name"),
            Job.connector_id,
            Connector.name.label("connector_name"),
            source.code.label("source_code"),
            Job.source_sender,
            Job.source_subject,
            Job.source_date,
            Job.created_at,
        )
        .join(Client, Client.id == Job.client_id)
        .outerjoin(Connector, Connector.id == Job.connector_id)
        .outerjoin(source, source.id == Job.source_language_id)
        .where(Job.id.in_(ids))
    )
    targets: dict[int, list[str]] = {}
    for job_id, code in session.execute(
        sa.select(job_target_languages.c.job_id, Language.code)
        .join(Language, Language.id == job_target_languages.c.language_id)
        .where(job_target_languages.c.job_id.in_(ids))
        .order_by(Language.name)
    ):
        targets.setdefault(job_id, []).append(code)
    file_counts = dict(
        session.execute(
            sa.select(JobFile.job_id, sa.func.count())
            .where(JobFile.job_id.in_(ids))
            .group_by(JobFile.job_id)
        ).all()
    )
    by_id = {
        line.id: JobRow(
            **line._asdict(),
            target_codes=targets.get(line.id, []),
            files_count=file_counts.get(line.id, 0),
        )
        for line in lines
    }
    return [by_id[job_id] for job_id in ids]


@bp.get("/projects", defaults={"kind": JobKind.PROJECT.value})
@bp.get("/quotes", defaults={"kind": JobKind.QUOTE.value})
@login_required
def list_jobs(kind: str) -> str:
    job_kind = JobKind(kind)
    session = db_session()
    page = job_list_page(
        session,
        job_kind,
        job_counts(session, _services().redis)[job_kind],
        before=_cursor("before"),
        after=_cursor("after"),
    )
    return render_template("jobs/list.html", page=page, kind=job_kind, title=KIND_TITLES[job_kind])


@bp.get("/jobs/<int:job_id>")
@login_required
def show_job(job_id: int) -> str:
    job = db_session().get(Job, job_id)
    if job is None:
        abort(404)
    return render_template("jobs/show.html", job=job, kind_title=KIND_TITLES[job.kind])


@bp.get("/jobs/<int:job_id>/files/<int:file_id>")
@login_required
def download_file(job_id: int, file_id: int) -> Response:
    """Send a stored file under its original name. A file of another job is a 404."""
    job_file = db_session().get(JobFile, file_id)
    if job_file is None or job_file.job_id != job_id:
        abort(404)
    try:
        path = _services().store.path(job_file.storage_name)
    except ValueError:
        logger.error(
            "job file %s not sent: invalid storage name %r", file_id, job_file.storage_name
        )
        abort(404)
    if not path.is_file():
        logger.error("job file %s of job %s not sent: %s is missing", file_id, job_id, path)
        abort(404)
    return send_file(
        path,
        mimetype=job_file.content_type or "application/octet-stream",
        as_attachment=True,
        download_name=job_file.original_name,
    )
