"""Choosing the SMTP server for a message, building it, and sending it.

Messages are built with Flask-Mail, so the caller needs an app context (the
web request or the Celery task provides one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from flask_mail import Message
from sqlalchemy.orm import Session

from mailauth import SecretBox, TemporaryTokenError, TokenError
from mailauth.tokens import TokenManager, mark_account
from models import Branch, OutboxMessage, SmtpAuthMethod, SmtpSettings, TokenStatus

from .smtp import PermanentSendError, SmtpEndpoint, TemporarySendError, TokenRejected, send_bytes

logger = logging.getLogger(__name__)


def company_settings(session: Session) -> SmtpSettings | None:
    return session.scalars(
        sa.select(SmtpSettings).where(SmtpSettings.branch_id.is_(None)).order_by(SmtpSettings.id)
    ).first()


def settings_for_branch(session: Session, branch_id: int | None) -> SmtpSettings | None:
    """Return the branch's own SMTP settings when it uses them, else the company's."""
    if branch_id is not None:
        branch = session.get(Branch, branch_id)
        if branch is not None and branch.use_own_smtp and branch.smtp and branch.smtp.host:
            return branch.smtp
    return company_settings(session)


def working_settings(session: Session, avoid_account_id: int | None) -> SmtpSettings | None:
    """Return configured SMTP settings that do not depend on ``avoid_account_id``.

    Used to tell people that an account needs consent through a channel
    that still works: the company's first, then any branch's own.
    """
    candidates = [company_settings(session)] + list(
        session.scalars(
            sa.select(SmtpSettings)
            .join(Branch, SmtpSettings.branch_id == Branch.id)
            .where(Branch.use_own_smtp.is_(True))
            .order_by(SmtpSettings.id)
        )
    )
    for settings in candidates:
        if settings is None or not settings.host:
            continue
        if settings.auth_method == SmtpAuthMethod.OAUTH2 and (
            settings.mail_account_id == avoid_account_id
            or settings.mail_account is None
            or settings.mail_account.token_status != TokenStatus.ACTIVE
        ):
            continue
        return settings
    return None


class Mailer:
    def __init__(
        self,
        box: SecretBox,
        tokens: TokenManager,
        *,
        timeout: float,
        ca_file: Path | None,
    ) -> None:
        self.box = box
        self.tokens = tokens
        self.timeout = timeout
        self.ca_file = ca_file

    def build(
        self,
        settings: SmtpSettings,
        *,
        recipients: Sequence[str],
        subject: str,
        body: str,
        reply_to: str | None = None,
        message_id: str | None = None,
    ) -> bytes:
        if not settings.email_address:
            raise PermanentSendError("E-mail Address is empty; enter the mailbox to send from")
        message = Message(
            subject=subject,
            sender=settings.email_address,
            recipients=list(recipients),
            body=body,
            reply_to=reply_to,
        )
        if message_id:
            message.msgId = message_id
        return message.as_bytes()

    def send(
        self,
        session: Session,
        settings: SmtpSettings,
        *,
        recipients: Sequence[str],
        subject: str,
        body: str,
        reply_to: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Send one message through ``settings``; raise a SendError on failure."""
        if not settings.host or not settings.port:
            raise PermanentSendError("SMTP Server is not set; enter it as host:port and save")
        raw = self.build(
            settings, recipients=recipients, subject=subject, body=body, reply_to=reply_to,
            message_id=message_id,
        )  # fmt: skip
        endpoint = SmtpEndpoint(
            settings.host, settings.port, settings.connection_type, self.timeout, self.ca_file
        )
        sender = settings.email_address or ""
        if settings.auth_method == SmtpAuthMethod.NONE:
            send_bytes(endpoint, sender=sender, recipients=recipients, message=raw)
            return
        if settings.auth_method == SmtpAuthMethod.PASSWORD:
            if settings.password_encrypted is None:
                raise PermanentSendError("No password is saved; enter it and save")
            send_bytes(
                endpoint, sender=sender, recipients=recipients, message=raw,
                login=settings.login or sender,
                password=self.box.decrypt(settings.password_encrypted),
            )  # fmt: skip
            return

        account_id = settings.mail_account_id
        if account_id is None:
            raise PermanentSendError('There is no OAuth2 token yet; click "Generate new token"')
        try:
            token = self.tokens.access_token(account_id)
            try:
                send_bytes(
                    endpoint, sender=sender, recipients=recipients, message=raw,
                    login=sender, access_token=token,
                )  # fmt: skip
            except TokenRejected:
                # Revoked before its expiry, perhaps: refresh once and retry.
                token = self.tokens.access_token(account_id, rejected=token)
                try:
                    send_bytes(
                        endpoint, sender=sender, recipients=recipients, message=raw,
                        login=sender, access_token=token,
                    )  # fmt: skip
                except TokenRejected as exc:
                    reason = (
                        f"{settings.host} rejected a freshly refreshed token for {sender} ({exc}). "
                        'Check E-mail Address, then click "Generate new token".'
                    )
                    mark_account(session, account_id, TokenStatus.NEEDS_CONSENT, reason)
                    raise PermanentSendError(reason) from None
        except TemporaryTokenError as exc:
            raise TemporarySendError(str(exc)) from None
        except TokenError as exc:
            raise PermanentSendError(str(exc)) from None

    def send_outbox_row(self, session: Session, row: OutboxMessage) -> None:
        settings = settings_for_branch(session, row.branch_id)
        if row.event == "token_needs_consent":
            settings = working_settings(session, row.about_account_id) or settings
        if settings is None:
            raise PermanentSendError(
                "No SMTP server is configured; set one in Configuration > General Configuration "
                "> Settings > E-mail"
            )
        self.send(
            session, settings, recipients=row.recipients.split(","), subject=row.subject,
            body=row.body, reply_to=row.reply_to, message_id=row.message_id,
        )  # fmt: skip
