"""Keeping OAuth tokens healthy without anyone watching."""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from celery import shared_task
from flask import current_app

from models import MailAccount, TokenStatus
from runtime import Services

logger = logging.getLogger(__name__)

# Refresh at least daily: cheap, and it proves the grant still works.
MAX_TOKEN_AGE = timedelta(hours=24)


@shared_task(name="mailroom.tokens.check_health", ignore_result=True, time_limit=600)
def check_health() -> dict[str, str]:
    """Refresh every consented account's token that is due and record the outcome."""
    services: Services = current_app.extensions["mailroom"]
    with services.db.session() as session:
        account_ids = list(
            session.scalars(
                sa.select(MailAccount.id).where(
                    MailAccount.refresh_token_encrypted.is_not(None),
                    MailAccount.token_status != TokenStatus.NEEDS_CONSENT,
                )
            )
        )
    outcomes = {}
    for account_id in account_ids:
        outcome = services.tokens.check(account_id, MAX_TOKEN_AGE)
        outcomes[str(account_id)] = outcome
        if outcome != "ok":
            logger.warning("token check of mail account %s: %s", account_id, outcome)
    return outcomes
