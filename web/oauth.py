"""Starting consent for a mail account and receiving the provider's answer."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, current_app, flash, redirect, request, session, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from mailauth import ClientConfigError, TokenError
from mailauth.consent import ConsentError, finish_consent, start_consent
from models import MailAccount
from runtime import Services

from .db import db_session
from .security import safe_next

logger = logging.getLogger(__name__)

bp = Blueprint("oauth", __name__)

CALLBACK_PATH = "/home-api/authentication/mail/oauth2/code"


def redirect_uri() -> str:
    """The one redirect URI registered with every provider."""
    public_url = current_app.config.get("MAILROOM_PUBLIC_URL")
    base = public_url or request.url_root.rstrip("/")
    return base + CALLBACK_PATH


def session_binding() -> str:
    binding = session.get("binding")
    if not binding:
        raise ConsentError("Your login session has no consent binding; log out and in again")
    return str(binding)


def begin_consent(account: MailAccount, return_to: str) -> Response:
    """Redirect the browser to the provider's consent page for ``account``.

    Called by the views that own a "Generate new token" button, after they
    saved the account's Client Id and Client Secret.
    """
    services: Services = current_app.extensions["mailroom"]
    provider = services.providers.get(account.provider)
    if provider is None:
        flash(
            f"Provider {account.provider!r} is not configured; add it to OAUTH_PROVIDERS.", "danger"
        )
        return redirect(return_to)
    try:
        url = start_consent(
            db_session(),
            account=account,
            provider=provider,
            box=services.box,
            user_id=current_user.id,
            session_binding=session_binding(),
            redirect_uri=redirect_uri(),
            return_to=return_to,
            now=datetime.now(UTC),
        )
    except (ClientConfigError, ConsentError) as exc:
        flash(str(exc), "danger")
        return redirect(return_to)
    db_session().commit()
    return redirect(url)


@bp.get(CALLBACK_PATH)
@login_required
def callback() -> Response:
    services: Services = current_app.extensions["mailroom"]
    try:
        result = finish_consent(
            db_session(),
            state=request.args.get("state"),
            code=request.args.get("code"),
            error=request.args.get("error"),
            error_description=request.args.get("error_description"),
            user_id=current_user.id,
            session_binding=session_binding(),
            providers=services.providers,
            box=services.box,
            redirect_uri=redirect_uri(),
            http_timeout=services.settings.http_timeout,
            now=datetime.now(UTC),
        )
    except TokenError as exc:
        logger.warning("consent callback rejected: %s", exc)
        flash(str(exc), "danger")
        return redirect(url_for("main.dashboard"))
    flash(f"OAuth2 Token was generated for {result.account.email}.", "success")
    return redirect(safe_next(result.return_to, url_for("main.dashboard")))
