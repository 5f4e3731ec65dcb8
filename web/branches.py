"""Configuration > Branches: list, add and edit, with each branch's own SMTP server."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from models import Branch, Client, TokenStatus
from runtime import Services

from .db import db_session
from .email_forms import (
    BranchForm,
    EmailTestForm,
    SmtpFormContext,
    add_error,
    apply_branch_form,
    branch_initial_data,
    duplicate_branch_message,
    format_server,
)
from .email_settings import (
    CONCURRENT_SAVE_MESSAGE,
    TEST_FORM_PREFIX,
    after_save,
    new_test_form,
    send_test_email,
)
from .security import admin_required

logger = logging.getLogger(__name__)

bp = Blueprint("branches", __name__, url_prefix="/configuration/branches")

GENERAL_TAB = "general"
EMAIL_TAB = "email"
# Fields shown on the General tab; an error in any other field opens the E-mail tab.
GENERAL_FIELDS = ("name", "clients")


def _services() -> Services:
    services: Services = current_app.extensions["mailroom"]
    return services


def _branch_or_404(branch_id: int) -> Branch:
    branch = db_session().get(Branch, branch_id)
    if branch is None:
        abort(404)
    return branch


def _edit_url(branch: Branch, tab: str = GENERAL_TAB) -> str:
    if tab == GENERAL_TAB:
        return url_for("branches.edit_branch", branch_id=branch.id)
    return url_for("branches.edit_branch", branch_id=branch.id, tab=tab)


@bp.get("")
@admin_required
def list_branches() -> str:
    session = db_session()
    branches = session.scalars(
        sa.select(Branch).options(selectinload(Branch.smtp)).order_by(Branch.name)
    ).all()
    client_counts = dict(
        session.execute(
            sa.select(Client.branch_id, sa.func.count())
            .where(Client.branch_id.is_not(None))
            .group_by(Client.branch_id)
        ).all()
    )
    return render_template(
        "branches/list.html",
        branches=branches,
        client_counts=client_counts,
        format_server=format_server,
    )


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def new_branch() -> str | Response:
    return _form_page(None)


@bp.route("/<int:branch_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_branch(branch_id: int) -> str | Response:
    return _form_page(_branch_or_404(branch_id))


@bp.post("/<int:branch_id>/email/test")
@admin_required
def send_test(branch_id: int) -> str | Response:
    """Send the test e-mail through the branch's own saved server, checked or not.

    Testing before checking Use Own SMTP Server lets the admin switch over
    only once the server works.
    """
    branch = _branch_or_404(branch_id)
    test_form = EmailTestForm(prefix=TEST_FORM_PREFIX)
    not_configured = (
        f'Branch "{branch.name}" has no SMTP server of its own yet; fill in the E-mail tab and '
        "click Save, then send the test e-mail."
    )
    if send_test_email(test_form, branch.smtp, not_configured):
        return redirect(_edit_url(branch, EMAIL_TAB))
    form = _branch_form(branch, formdata=None)
    return _render(branch, form, test_form, EMAIL_TAB)


def _branch_form(branch: Branch | None, **kwargs: object) -> BranchForm:
    session = db_session()
    context = SmtpFormContext(session, _services().providers, branch.smtp if branch else None)
    return BranchForm(context, branch, data=branch_initial_data(branch, session), **kwargs)


def _form_page(branch: Branch | None) -> str | Response:
    """Show the form, or save it and go back to the branch or to the provider's consent."""
    form = _branch_form(branch)
    if form.validate_on_submit():
        saved = _save(form, branch)
        if saved is not None and saved.smtp is not None:
            tab = EMAIL_TAB if form.generate_token.data else GENERAL_TAB
            return after_save(
                form, saved.smtp, _edit_url(saved, tab), f'Branch "{saved.name}" was saved.'
            )
    if form.errors:
        tab = GENERAL_TAB if any(name in form.errors for name in GENERAL_FIELDS) else EMAIL_TAB
    else:
        tab = EMAIL_TAB if request.args.get("tab") == EMAIL_TAB else GENERAL_TAB
    test_form = new_test_form() if branch is not None else None
    return _render(branch, form, test_form, tab)


def _save(form: BranchForm, branch: Branch | None) -> Branch | None:
    """Apply the form and commit; return None with a form error if a concurrent save clashed."""
    session = form.context.session
    try:
        saved = apply_branch_form(form, branch, _services().box)
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        logger.warning("saving branch %r failed: %s", form.name.data, exc.orig)
        name_taken = session.scalars(sa.select(Branch.id).where(Branch.name == form.name.data))
        if name_taken.first() is not None:
            add_error(form.name, duplicate_branch_message(form.name.data))
        else:
            form.form_errors.append(CONCURRENT_SAVE_MESSAGE)
        return None
    logger.info("branch %s %r saved by user %s", saved.id, saved.name, current_user.get_id())
    return saved


def _render(
    branch: Branch | None, form: BranchForm, test_form: EmailTestForm | None, tab: str
) -> str:
    return render_template(
        "branches/form.html",
        branch=branch,
        form=form,
        test_form=test_form,
        tab=tab,
        TokenStatus=TokenStatus,
    )
