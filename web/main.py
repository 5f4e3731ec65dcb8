"""The dashboard."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, render_template
from flask_login import login_required

from models import (
    Connector,
    ConnectorRun,
    Job,
    JobKind,
    MailAccount,
    OutboxMessage,
    OutboxStatus,
    TokenStatus,
)

from .db import db_session

bp = Blueprint("main", __name__)


@bp.get("/")
@login_required
def dashboard() -> str:
    session = db_session()
    connectors = session.scalars(sa.select(Connector).order_by(Connector.name).limit(50)).all()
    last_runs = {
        run.connector_id: run
        for run in session.scalars(
            sa.select(ConnectorRun).where(
                ConnectorRun.id.in_(
                    sa.select(sa.func.max(ConnectorRun.id)).group_by(ConnectorRun.connector_id)
                )
            )
        )
    }
    accounts = session.scalars(
        sa.select(MailAccount).order_by(MailAccount.provider, MailAccount.email)
    ).all()
    failed_mail = session.scalars(
        sa.select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.FAILED)
        .order_by(OutboxMessage.id.desc())
        .limit(20)
    ).all()
    counts = dict(session.execute(sa.select(Job.kind, sa.func.count()).group_by(Job.kind)).all())
    return render_template(
        "main/dashboard.html",
        connectors=connectors,
        last_runs=last_runs,
        accounts=accounts,
        project_count=counts.get(JobKind.PROJECT, 0),
        quote_count=counts.get(JobKind.QUOTE, 0),
        failed_mail=failed_mail,
        TokenStatus=TokenStatus,
    )
