"""The dashboard, and consent for a mail account from its row there."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, render_template, url_for
from flask_login import login_required
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from models import (
    Connector,
    JobKind,
    MailAccount,
    MessageFailure,
    OutboxMessage,
    OutboxStatus,
    TokenStatus,
)

from .connectors import latest_runs
from .counts import job_counts
from .db import db_session
from .forms import EmptyForm
from .oauth import begin_consent
from .security import admin_required

bp = Blueprint("main", __name__)

CONNECTORS_SHOWN = 50
FAILED_MAIL_SHOWN = 20
# Statuses whose row offers "Generate new token".
CONSENT_STATUSES = (TokenStatus.NONE, TokenStatus.NEEDS_CONSENT, TokenStatus.CLIENT_ERROR)


@bp.get("/")
@login_required
def dashboard() -> str:
    session = db_session()
    connectors = session.scalars(
        sa.select(Connector)
        .options(selectinload(Connector.mail_account))
        .order_by(Connector.name)
        .limit(CONNECTORS_SHOWN)
    ).all()
    shown_ids = [connector.id for connector in connectors]
    quarantined = dict(
        session.execute(
            sa.select(MessageFailure.connector_id, sa.func.count())
            .where(
                MessageFailure.connector_id.in_(shown_ids),
                MessageFailure.quarantined_at.is_not(None),
            )
            .group_by(MessageFailure.connector_id)
        ).all()
    )
    connector_total = (
        session.scalar(sa.select(sa.func.count()).select_from(Connector))
        if len(connectors) == CONNECTORS_SHOWN
        else len(connectors)
    )
    accounts = session.scalars(
        sa.select(MailAccount).order_by(MailAccount.provider, MailAccount.email)
    ).all()
    failed_mail = session.scalars(
        sa.select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.FAILED)
        .order_by(OutboxMessage.id.desc())
        .limit(FAILED_MAIL_SHOWN)
    ).all()
    counts = job_counts(session, current_app.extensions["mailroom"].redis)
    return render_template(
        "main/dashboard.html",
        connectors=connectors,
        connector_total=connector_total,
        last_runs=latest_runs(session, shown_ids),
        quarantined=quarantined,
        accounts=accounts,
        project_count=counts[JobKind.PROJECT],
        quote_count=counts[JobKind.QUOTE],
        failed_mail=failed_mail,
        TokenStatus=TokenStatus,
        consent_statuses=CONSENT_STATUSES,
        form=EmptyForm(),
    )


@bp.post("/mail-accounts/<int:account_id>/token")
@admin_required
def generate_token(account_id: int) -> Response:
    """Start consent for a mail account, then come back to the dashboard."""
    account = db_session().get(MailAccount, account_id)
    if account is None:
        abort(404)
    if not EmptyForm().validate_on_submit():
        abort(400)
    return begin_consent(account, return_to=url_for("main.dashboard"))
