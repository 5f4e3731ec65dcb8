"""Smart Connector pages: list, add, edit, show, run now, Test Connector, quarantine,
token consent, delete, export."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
import yaml
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required
from kombu.exceptions import OperationalError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from werkzeug.wrappers import Response

from intake.definition import export_connector
from intake.failures import get_failure, release
from intake.preview import PREVIEW_LIMIT, SELECTION_SECONDS, preview_connector
from models import (
    AuthMethod,
    Connector,
    ConnectorRun,
    Job,
    MailAccount,
    MessageFailure,
    ProcessedMessage,
    RunProblem,
    TokenStatus,
)
from runtime import Services
from tasks.connectors import scan

from .connector_forms import ConnectorForm, FormContext, duplicate_name_message
from .connector_pages import (
    FORM_TABS,
    FinishTestForm,
    connector_summary,
    form_next_run,
    open_tab,
    tab_errors,
)
from .connector_save import apply_form, initial_data
from .db import db_session
from .forms import EmptyForm
from .jobs import paginate, requested_page_number
from .oauth import begin_consent
from .security import admin_required

logger = logging.getLogger(__name__)

bp = Blueprint("connectors", __name__, url_prefix="/configuration/integration/smart-connectors")

CONNECTORS_PER_PAGE = 50
RUNS_SHOWN = 20
LEFT_MESSAGES_SHOWN = 100
QUARANTINED_SHOWN = 100
# fetch() in mailroom.js sends this header to get the Test Connector result
# without the page around it.
FRAGMENT_HEADER = "X-Requested-With"


@dataclass(frozen=True)
class LeftMessage:
    """A message that recent runs could not turn into a job, with the newest run's start."""

    problem: RunProblem
    seen_at: datetime


def _services() -> Services:
    services: Services = current_app.extensions["mailroom"]
    return services


def _connector_or_404(connector_id: int) -> Connector:
    connector = db_session().get(Connector, connector_id)
    if connector is None:
        abort(404)
    return connector


def _show_url(connector: Connector) -> str:
    return url_for("connectors.show_connector", connector_id=connector.id)


def latest_runs(session: Session, connector_ids: list[int]) -> dict[int, ConnectorRun]:
    """Return the newest run of each connector in ``connector_ids``.

    A connector that never ran has no entry.
    """
    if not connector_ids:
        return {}
    newest_ids = (
        sa.select(sa.func.max(ConnectorRun.id))
        .where(ConnectorRun.connector_id.in_(connector_ids))
        .group_by(ConnectorRun.connector_id)
    )
    runs = session.scalars(sa.select(ConnectorRun).where(ConnectorRun.id.in_(newest_ids)))
    return {run.connector_id: run for run in runs}


def left_messages(session: Session, connector_id: int, run_ids: list[int]) -> list[LeftMessage]:
    """Return the problems of ``run_ids``, one per message, from the newest run that reported it.

    A message with a problem stays in the folder, so every later run reports
    it again. Listing each run's copy would bury the other messages. A
    message quarantined since, or turned into a job since, is no longer left
    behind: the quarantine table or the job list shows it.
    """
    if not run_ids:
        return []
    rows = session.execute(
        sa.select(RunProblem, ConnectorRun.started_at)
        .join(RunProblem.run)
        .where(RunProblem.run_id.in_(run_ids))
        .order_by(ConnectorRun.started_at.desc(), RunProblem.run_id.desc(), RunProblem.id)
    ).all()
    settled = _settled_keys(session, connector_id, [problem for problem, _ in rows])
    seen: set[str] = set()
    messages = []
    for problem, started_at in rows:
        if problem.message_id:
            key = f"message-id:{problem.message_id}"
        elif problem.uid is not None:
            key = f"uid:{problem.uid}"
        else:
            key = f"problem:{problem.id}"
        if key in seen or key in settled:
            continue
        seen.add(key)
        messages.append(LeftMessage(problem=problem, seen_at=started_at))
    return messages[:LEFT_MESSAGES_SHOWN]


def _settled_keys(session: Session, connector_id: int, problems: list[RunProblem]) -> set[str]:
    """Return the keys of ``problems`` whose message was quarantined or made a job since."""
    message_ids = {problem.message_id for problem in problems if problem.message_id}
    uids = {problem.uid for problem in problems if problem.uid is not None}
    if not message_ids and not uids:
        return set()
    keys: set[str] = set()
    for model, extra in (
        (MessageFailure, MessageFailure.quarantined_at.is_not(None)),
        (ProcessedMessage, sa.true()),
    ):
        rows = session.execute(
            sa.select(model.message_id, model.uid).where(
                model.connector_id == connector_id,
                extra,
                sa.or_(model.message_id.in_(message_ids), model.uid.in_(uids)),
            )
        )
        keys.update(
            f"message-id:{message_id}" if message_id else f"uid:{uid}" for message_id, uid in rows
        )
    return keys


def problem_counts(session: Session, run_ids: list[int]) -> dict[int, int]:
    """Return how many messages each run of ``run_ids`` could not turn into a job."""
    if not run_ids:
        return {}
    rows = session.execute(
        sa.select(RunProblem.run_id, sa.func.count())
        .where(RunProblem.run_id.in_(run_ids))
        .group_by(RunProblem.run_id)
    )
    return {run_id: count for run_id, count in rows}


def quarantined_messages(session: Session, connector_id: int) -> list[MessageFailure]:
    """Return the connector's quarantined messages, the most recently quarantined first."""
    return list(
        session.scalars(
            sa.select(MessageFailure)
            .where(
                MessageFailure.connector_id == connector_id,
                MessageFailure.quarantined_at.is_not(None),
            )
            .order_by(MessageFailure.quarantined_at.desc(), MessageFailure.id.desc())
            .limit(QUARANTINED_SHOWN)
        )
    )


@bp.get("")
@login_required
def list_connectors() -> str:
    session = db_session()
    statement = (
        sa.select(Connector)
        .options(selectinload(Connector.client), selectinload(Connector.mail_account))
        .order_by(Connector.name)
    )
    page = paginate(session, statement, requested_page_number(), CONNECTORS_PER_PAGE)
    connectors = [row[0] for row in page.items]
    return render_template(
        "connectors/list.html",
        page=page,
        connectors=connectors,
        last_runs=latest_runs(session, [connector.id for connector in connectors]),
    )


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def new_connector() -> str | Response:
    return _form_page(None)


@bp.route("/<int:connector_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_connector(connector_id: int) -> str | Response:
    return _form_page(_connector_or_404(connector_id))


def _form_page(connector: Connector | None) -> str | Response:
    """Show the form, or save it and go to the connector page or the provider's consent."""
    session = db_session()
    form = ConnectorForm(
        FormContext(session, _services().providers, connector), data=initial_data(connector)
    )
    if form.validate_on_submit():
        saved = _save(form, connector)
        if saved is not None:
            if form.generate_token.data and saved.mail_account is not None:
                return begin_consent(saved.mail_account, return_to=_show_url(saved))
            flash(f'Smart Connector "{saved.name}" was saved.', "success")
            return redirect(_show_url(saved))

    if form.is_submitted():
        token_account = form.rows.account
    else:
        token_account = connector.mail_account if connector else None
    return render_template(
        "connectors/form.html",
        form=form,
        connector=connector,
        tabs=FORM_TABS,
        tab=open_tab(form, request.args.get("tab")),
        tab_errors=tab_errors(form),
        next_run=form_next_run(form, connector, datetime.now(UTC)),
        token_account=token_account,
        budget_code_groups=form.budget_code_groups(),
        provider_hosts_json=json.dumps(
            {key: provider.imap_host or "" for key, provider in _services().providers.items()}
        ),
        TokenStatus=TokenStatus,
    )


def _save(form: ConnectorForm, connector: Connector | None) -> Connector | None:
    """Apply the form and commit, or add an error and return None if a concurrent save clashed."""
    session = form.context.session
    try:
        # apply_form flushes a new connector, so a clash can surface there or at commit.
        saved = apply_form(form, connector, _services().box, datetime.now(UTC))
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        logger.warning("saving connector %r failed: %s", form.name.data, exc.orig)
        existing_id = session.scalars(
            sa.select(Connector.id).where(Connector.name == form.name.data)
        ).first()
        if existing_id is not None:
            form.name.errors.append(duplicate_name_message(form.name.data))
        else:
            form.form_errors.append(
                "Another change was saved at the same time; check the values and click Save again."
            )
        return None
    logger.info("connector %s %r saved by user %s", saved.id, saved.name, current_user.get_id())
    return saved


@bp.get("/<int:connector_id>")
@login_required
def show_connector(connector_id: int) -> str:
    session = db_session()
    connector = _connector_or_404(connector_id)
    runs = session.scalars(
        sa.select(ConnectorRun)
        .where(ConnectorRun.connector_id == connector.id)
        .order_by(ConnectorRun.started_at.desc(), ConnectorRun.id.desc())
        .limit(RUNS_SHOWN)
    ).all()
    run_ids = [run.id for run in runs]
    return render_template(
        "connectors/show.html",
        connector=connector,
        summary=connector_summary(session, connector),
        account=connector.mail_account,
        runs=runs,
        problem_counts=problem_counts(session, run_ids),
        left_messages=left_messages(session, connector.id, run_ids),
        quarantined=quarantined_messages(session, connector.id),
        form=EmptyForm(),
        AuthMethod=AuthMethod,
        TokenStatus=TokenStatus,
    )


@bp.post("/<int:connector_id>/run")
@admin_required
def run_now(connector_id: int) -> Response:
    connector = _connector_or_404(connector_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        scan.delay(connector.id, "manual")
    except OperationalError as exc:
        logger.error("queueing a manual run of connector %s failed: %s", connector.id, exc)
        flash(
            f"The run could not be queued because the task queue did not respond ({exc}). "
            "Check that Redis and the worker are running, then click Run now again.",
            "danger",
        )
    else:
        logger.info("manual run of connector %s queued by user %s", connector.id, current_user.id)
        flash(
            f'A run of "{connector.name}" was queued. Reload this page in a moment to see '
            "its result.",
            "info",
        )
    return redirect(_show_url(connector))


@bp.post("/<int:connector_id>/test")
@admin_required
def test_connector(connector_id: int) -> str:
    """Connect and show what a run would do, changing nothing in the mailbox.

    mailroom.js posts here and shows the returned fragment in a dialog.
    Without JavaScript the button posts the page's form and gets a whole page.
    """
    connector = _connector_or_404(connector_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    preview = preview_connector(_services().intake_context(), connector.id)
    if preview.error:
        logger.info("Test Connector of connector %s failed: %s", connector.id, preview.error)
    else:
        logger.info(
            "Test Connector of connector %s by user %s listed %d of %d messages",
            connector.id,
            current_user.id,
            len(preview.messages),
            preview.total,
        )
    fragment = request.headers.get(FRAGMENT_HEADER) == "XMLHttpRequest"
    return render_template(
        "connectors/_test_result.html" if fragment else "connectors/test.html",
        connector=connector,
        preview=preview,
        finish_form=FinishTestForm(formdata=None, token=preview.token),
        selection_minutes=SELECTION_SECONDS // 60,
        preview_limit=PREVIEW_LIMIT,
    )


@bp.post("/<int:connector_id>/test/finish")
@admin_required
def finish_test(connector_id: int) -> Response:
    """Queue a run that processes exactly the e-mails the Test Connector listed."""
    connector = _connector_or_404(connector_id)
    form = FinishTestForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        scan.delay(connector.id, "test", form.token.data)
    except OperationalError as exc:
        logger.error("queueing Finish Test of connector %s failed: %s", connector.id, exc)
        flash(
            f"Finish Test could not be queued because the task queue did not respond ({exc}). "
            "Check that Redis and the worker are running, then click Test Connector again.",
            "danger",
        )
    else:
        logger.info("Finish Test of connector %s queued by user %s", connector.id, current_user.id)
        flash(
            "Finish Test started: the previewed e-mails are being processed. Reload this page "
            "in a moment to see the test run below.",
            "info",
        )
    return redirect(_show_url(connector))


@bp.post("/<int:connector_id>/quarantine/<int:failure_id>/release")
@admin_required
def release_message(connector_id: int, failure_id: int) -> Response:
    """Take a message out of quarantine.

    A message in the quarantine folder is processed from there at once. One
    still in the scanned folder is left for the next run.
    """
    session = db_session()
    connector = _connector_or_404(connector_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    failure = get_failure(session, connector.id, failure_id)
    if failure is None or failure.quarantined_at is None:
        flash(
            "That e-mail is no longer in quarantine, so nothing was changed. "
            "The list below shows the e-mails still quarantined.",
            "warning",
        )
        return redirect(_show_url(connector))
    described = (
        f'The e-mail "{failure.subject or "(no subject)"}" from '
        f"{failure.sender or 'an unknown sender'}"
    )
    if failure.moved_to_folder is not None:
        return _process_moved(connector, failure_id, described, failure.moved_to_folder)

    release(session, connector.id, failure_id)
    session.commit()
    logger.info(
        "quarantined message %s of connector %s released by user %s",
        failure_id,
        connector.id,
        current_user.id,
    )
    flash(
        f"{described} left quarantine, so the next run processes it again. "
        "Click Run now to process it at once.",
        "success",
    )
    return redirect(_show_url(connector))


def _process_moved(connector: Connector, failure_id: int, described: str, folder: str) -> Response:
    """Queue a run that processes one quarantined message from the folder it was moved to."""
    try:
        scan.apply_async(args=(connector.id, "retry"), kwargs={"failure_id": failure_id})
    except OperationalError as exc:
        logger.error(
            "queueing Process again of message %s of connector %s failed: %s",
            failure_id,
            connector.id,
            exc,
        )
        flash(
            f"Process again could not be queued because the task queue did not respond ({exc}). "
            "Check that Redis and the worker are running, then click Process again.",
            "danger",
        )
        return redirect(_show_url(connector))
    logger.info(
        "Process again of message %s of connector %s queued by user %s",
        failure_id,
        connector.id,
        current_user.id,
    )
    flash(
        f'{described} is being processed from folder "{folder}". Reload this page in a '
        "moment: the run is listed below, and the e-mail leaves this list once its job is made.",
        "info",
    )
    return redirect(_show_url(connector))


@bp.post("/<int:connector_id>/token")
@admin_required
def generate_token(connector_id: int) -> Response:
    connector = _connector_or_404(connector_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    account: MailAccount | None = connector.mail_account
    if connector.auth_method != AuthMethod.OAUTH2 or account is None:
        flash(
            f'"{connector.name}" logs in with a password, so it needs no token. '
            "Edit it and choose OAuth2 to use a token.",
            "warning",
        )
        return redirect(_show_url(connector))
    return begin_consent(account, return_to=_show_url(connector))


@bp.route("/<int:connector_id>/delete", methods=["GET", "POST"])
@admin_required
def delete_connector(connector_id: int) -> str | Response:
    """Show a confirmation page on GET and delete on POST.

    The connector's jobs stay, without their link to it.
    """
    session = db_session()
    connector = _connector_or_404(connector_id)
    form = EmptyForm()
    if form.validate_on_submit():
        name = connector.name
        session.delete(connector)
        session.commit()
        logger.info("connector %s %r deleted by user %s", connector_id, name, current_user.id)
        flash(
            f'Smart Connector "{name}" was deleted. Its projects and quotes were kept.', "success"
        )
        return redirect(url_for("connectors.list_connectors"))
    job_count = session.scalar(
        sa.select(sa.func.count()).select_from(Job).where(Job.connector_id == connector.id)
    )
    return render_template(
        "connectors/delete.html", connector=connector, form=form, job_count=job_count or 0
    )


@bp.get("/<int:connector_id>/export")
@login_required
def export(connector_id: int) -> Response:
    """Send the definition as a YAML download. It names rows by name or code, without secrets."""
    connector = _connector_or_404(connector_id)
    text = yaml.safe_dump(export_connector(connector), sort_keys=False, allow_unicode=True)
    return Response(
        text,
        content_type="application/yaml; charset=utf-8",
        headers={
            "Content-Disposition": f"attachment; filename=smart-connector-{connector.id}.yaml"
        },
    )
