"""Configuration > General Configuration > Settings: the company's E-mail tab.

The module also contains the steps that the branch pages share with it:
saving SMTP settings, starting consent for them, and sending the test e-mail.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from models import SmtpSettings, TokenStatus
from outgoing import SendError
from outgoing.mailer import company_settings
from runtime import Services

from .db import db_session
from .email_forms import (
    AUTH_METHOD_CHOICES,
    CONNECTION_TYPE_CHOICES,
    EmailTestForm,
    SmtpFormContext,
    SmtpSettingsForm,
    apply_smtp_form,
    format_server,
    smtp_initial_data,
)
from .oauth import begin_consent
from .security import admin_required

logger = logging.getLogger(__name__)

bp = Blueprint("email_settings", __name__, url_prefix="/configuration/general/settings")

TEST_SUBJECT = "Mailroom test e-mail"
TEST_FORM_PREFIX = "test"
CONCURRENT_SAVE_MESSAGE = (
    "Another change was saved at the same time; check the values and click Save again."
)


def _services() -> Services:
    found: Services = current_app.extensions["mailroom"]
    return found


@bp.get("")
@admin_required
def index() -> Response:
    """Open the first tab; E-mail is the only one so far."""
    return redirect(url_for("email_settings.edit"))


@bp.route("/email", methods=["GET", "POST"])
@admin_required
def edit() -> str | Response:
    session = db_session()
    settings = company_settings(session)
    form = SmtpSettingsForm(
        SmtpFormContext(session, _services().providers, settings),
        data=smtp_initial_data(settings),
    )
    if form.validate_on_submit():
        if settings is None:
            settings = SmtpSettings(branch_id=None)
            session.add(settings)
        apply_smtp_form(form, settings, _services().box)
        if commit_or_report(form, "company e-mail settings"):
            return after_save(
                form, settings, url_for("email_settings.edit"), "The e-mail settings were saved."
            )
    return _render(form, new_test_form())


@bp.post("/email/test")
@admin_required
def send_test() -> str | Response:
    session = db_session()
    settings = company_settings(session)
    test_form = EmailTestForm(prefix=TEST_FORM_PREFIX)
    not_configured = (
        "No SMTP server is saved yet; fill in the E-mail tab and click Save, then send the test "
        "e-mail."
    )
    if send_test_email(test_form, settings, not_configured):
        return redirect(url_for("email_settings.edit"))
    form = SmtpSettingsForm(
        SmtpFormContext(session, _services().providers, settings),
        formdata=None,
        data=smtp_initial_data(settings),
    )
    return _render(form, test_form)


def _render(form: SmtpSettingsForm, test_form: EmailTestForm) -> str:
    return render_template(
        "email_settings/edit.html", form=form, test_form=test_form, TokenStatus=TokenStatus
    )


# Shared with the branch pages ----------------------------------------------------


def new_test_form() -> EmailTestForm:
    """Return an empty test form that suggests the admin's own address."""
    return EmailTestForm(
        prefix=TEST_FORM_PREFIX, formdata=None, data={"recipient": current_user.email}
    )


def commit_or_report(form: SmtpSettingsForm, log_label: str) -> bool:
    """Commit the session, or roll back and add a form error when a concurrent save clashed."""
    session = form.context.session
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        logger.warning("saving %s failed: %s", log_label, exc.orig)
        form.form_errors.append(CONCURRENT_SAVE_MESSAGE)
        return False
    logger.info("%s saved by user %s", log_label, current_user.get_id())
    return True


def after_save(
    form: SmtpSettingsForm, settings: SmtpSettings, return_to: str, saved_message: str
) -> Response:
    """Go to the provider's consent page if "Generate new token" was clicked, else back."""
    if form.generate_token.data and settings.mail_account is not None:
        return begin_consent(settings.mail_account, return_to=return_to)
    flash(saved_message, "success")
    return redirect(return_to)


def send_test_email(
    test_form: EmailTestForm, settings: SmtpSettings | None, not_configured: str
) -> bool:
    """Send the test e-mail through the saved ``settings`` and flash the outcome.

    Returns True when the server accepted the message. It sends within the
    request, so the page shows the server's reply at once.
    """
    if not test_form.validate_on_submit():
        return False
    if settings is None or not settings.host:
        flash(not_configured, "warning")
        return False
    address = test_form.recipient.data
    try:
        _services().mailer.send(
            db_session(),
            settings,
            recipients=[address],
            subject=TEST_SUBJECT,
            body=compose_test_body(settings),
            reply_to=current_user.email,
        )
    except SendError as exc:
        logger.warning(
            "test e-mail through SMTP settings %s to %s failed: %s", settings.id, address, exc
        )
        flash(f"The test e-mail to {address} was not sent: {exc}", "danger")
        return False
    logger.info(
        "test e-mail through SMTP settings %s sent to %s by user %s",
        settings.id,
        address,
        current_user.get_id(),
    )
    flash(f"Test e-mail sent to {address}.", "success")
    return True


def compose_test_body(settings: SmtpSettings) -> str:
    methods = {choice.value: choice.label for choice in AUTH_METHOD_CHOICES}
    connections = {choice.value: choice.label for choice in CONNECTION_TYPE_CHOICES}
    return (
        "This is a test e-mail from Mailroom.\n\n"
        f"It was sent through {format_server(settings.host, settings.port)} "
        f"(Connection Type {connections[settings.connection_type.value]}, "
        f"Authorization method {methods[settings.auth_method.value]}) "
        f"from {settings.email_address}, at the request of {current_user.email}.\n\n"
        "If you can read it, Mailroom can send its notifications with these settings.\n"
    )
