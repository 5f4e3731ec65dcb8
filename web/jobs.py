"""Projects and quotes: lists, the job page and file downloads."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, render_template, request, send_file
from flask_login import login_required
from sqlalchemy.orm import Session, selectinload
from werkzeug.wrappers import Response

from models import Job, JobFile, JobKind
from runtime import Services

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


def _job_list_statement(kind: JobKind) -> sa.Select[Any]:
    files_count = (
        sa.select(sa.func.count(JobFile.id))
        .where(JobFile.job_id == Job.id)
        .correlate(Job)
        .scalar_subquery()
    )
    return (
        sa.select(Job, files_count.label("files_count"))
        .where(Job.kind == kind)
        .options(
            selectinload(Job.client),
            selectinload(Job.connector),
            selectinload(Job.source_language),
            selectinload(Job.target_languages),
        )
        .order_by(Job.created_at.desc(), Job.id.desc())
    )


@bp.get("/projects", defaults={"kind": JobKind.PROJECT.value})
@bp.get("/quotes", defaults={"kind": JobKind.QUOTE.value})
@login_required
def list_jobs(kind: str) -> str:
    job_kind = JobKind(kind)
    page = paginate(
        db_session(), _job_list_statement(job_kind), requested_page_number(), JOBS_PER_PAGE
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
