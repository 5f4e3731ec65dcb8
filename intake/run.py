"""One run of one connector: lock, log in, process the folder, record the run.

The processing steps and their order are in ``email_source``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from imapsession import (
    AuthenticationFailed,
    ImapSettings,
    MailboxError,
    MailboxSession,
    open_mailbox,
)
from locations import LocationError
from logconfig import connector_id_var, run_id_var
from mailauth import ConsentRequired, TokenError
from mailauth.tokens import mark_account
from models import (
    AuthMethod,
    Connector,
    ConnectorRun,
    RunProblem,
    RunStatus,
    TokenStatus,
)
from outgoing import notifications

from .context import IntakeContext
from .email_source import MailboxRun
from .jobs import (
    ConnectorSettings,
)
from .location_source import LocationRun
from .outcome import RunOutcome
from .quarantine import QuarantineRetry

logger = logging.getLogger(__name__)

# The run lock expires on its own if a worker dies; it is renewed per batch.
RUN_LOCK_SECONDS = 300


@dataclass(frozen=True)
class TestSelection:
    """The messages a Test Connector preview showed, for Finish Test."""

    uidvalidity: int
    uids: list[int]


def run_connector(
    ctx: IntakeContext,
    connector_id: int,
    trigger: str,
    *,
    only: TestSelection | None = None,
    quarantined: int | None = None,
) -> RunOutcome | None:
    """Run the connector unless a run of it is already going on.

    ``only`` limits the run to the messages a Test Connector preview showed.
    ``quarantined`` names a message failure whose message moved to the
    quarantine folder: the run processes only that message, from there.
    Returns None when the connector is gone, inactive for a scheduled run, or
    locked by another run.
    """
    lock = ctx.redis.lock(_run_lock_name(connector_id), timeout=RUN_LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        logger.info("connector %s is already running; skipping this %s run", connector_id, trigger)
        return None
    token = connector_id_var.set(connector_id)
    try:
        return _run(ctx, connector_id, trigger, lock, only, quarantined)
    finally:
        connector_id_var.reset(token)
        try:
            lock.release()
        except redis.exceptions.LockError:
            logger.warning(
                "the run lock of connector %s expired before the run ended", connector_id
            )


def _run_lock_name(connector_id: int) -> str:
    return f"mailroom:connector-run:{connector_id}"


def run_in_progress(ctx: IntakeContext, connector_id: int) -> bool:
    """Return True while a run of the connector holds its run lock."""
    return bool(ctx.redis.exists(_run_lock_name(connector_id)))


def _start(
    ctx: IntakeContext, connector_id: int, trigger: str
) -> tuple[ConnectorSettings, int] | None:
    with ctx.db.session() as session:
        connector = session.get(Connector, connector_id)
        if connector is None:
            logger.warning("connector %s no longer exists", connector_id)
            return None
        if not connector.active and trigger == "schedule":
            logger.info("connector %s is not active; skipping", connector_id)
            return None
        settings = ConnectorSettings.from_model(connector)
        run = ConnectorRun(connector_id=connector_id, trigger=trigger)
        session.add(run)
        connector.last_run_at = datetime.now(UTC)
        session.commit()
        return settings, run.id


def _run(
    ctx: IntakeContext,
    connector_id: int,
    trigger: str,
    lock: redis.lock.Lock,
    only: TestSelection | None,
    quarantined: int | None = None,
) -> RunOutcome | None:
    started = _start(ctx, connector_id, trigger)
    if started is None:
        return None
    settings, run_id = started
    run_token = run_id_var.set(run_id)
    outcome = RunOutcome(run_id=run_id, status=RunStatus.RUNNING)
    workdir = ctx.store.work_root / f"run-{run_id}"
    logger.info("run %s of connector %s started (%s)", run_id, connector_id, trigger)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if quarantined is not None and settings.source_location != "email":
            raise MailboxError(
                "Process again reads a quarantined e-mail from its IMAP folder, but this "
                f"connector now reads from {settings.source_location}; move the e-mail "
                "out of the quarantine folder by hand"
            )
        if settings.source_location != "email":
            LocationRun(ctx, settings, run_id, outcome, workdir, lock).process(
                only.uids if only is not None else None
            )
        else:
            with login(ctx, settings) as mailbox:
                if only is not None and only.uidvalidity != mailbox.uidvalidity:
                    raise MailboxError(
                        f"Folder {settings.folder!r} was recreated since the test "
                        "(its UIDVALIDITY changed); run Test Connector again"
                    )
                if quarantined is not None:
                    retry = QuarantineRetry(ctx, settings, run_id, mailbox, outcome, workdir, lock)
                    retry.process_failure(quarantined)
                else:
                    MailboxRun(ctx, settings, run_id, mailbox, outcome, workdir, lock).process(
                        only.uids if only is not None else None
                    )
        outcome.status = RunStatus.PARTIAL if outcome.problems else RunStatus.SUCCEEDED
    except ConsentRequired as exc:
        outcome.status = RunStatus.FAILED
        outcome.error = str(exc)
        outcome.notify_failure = False
        logger.warning("run %s failed: %s", run_id, exc)
    except (MailboxError, TokenError, LocationError) as exc:
        outcome.status = RunStatus.FAILED
        outcome.error = str(exc)
        logger.warning("run %s failed: %s", run_id, exc)
    except Exception as exc:
        outcome.status = RunStatus.FAILED
        outcome.error = (
            f"Internal error ({type(exc).__name__}); see the worker log for run {run_id}"
        )
        logger.exception("run %s failed with an unexpected error", run_id)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        _finish(ctx, outcome)
        logger.info(
            "run %s finished: %s, %d seen, %d jobs, %d deleted, %d problems",
            run_id,
            outcome.status.value,
            outcome.messages_seen,
            outcome.jobs_created,
            outcome.messages_deleted,
            len(outcome.problems),
        )
        run_id_var.reset(run_token)
    return outcome


def _finish(ctx: IntakeContext, outcome: RunOutcome) -> None:
    with ctx.db.session() as session:
        run = session.get(ConnectorRun, outcome.run_id)
        if run is None:
            return
        run.status = outcome.status
        run.finished_at = datetime.now(UTC)
        run.messages_seen = outcome.messages_seen
        run.jobs_created = outcome.jobs_created
        run.messages_deleted = outcome.messages_deleted
        run.messages_skipped = outcome.messages_skipped
        run.error = outcome.error
        if outcome.status == RunStatus.FAILED and outcome.notify_failure:
            _notify_failure(session, run, outcome.error or "unknown error")
        elif (
            outcome.status != RunStatus.FAILED
            and _previous_status(session, run) == RunStatus.FAILED
        ):
            connector = session.get(Connector, run.connector_id)
            if connector is not None:
                notifications.connector_recovered(session, connector, run.id)
        for uid, message_id, sender, subject, reason in outcome.problems:
            run.problems.append(
                RunProblem(
                    uid=uid,
                    message_id=message_id[:998] if message_id else None,
                    sender=sender[:998] if sender else None,
                    subject=subject,
                    reason=reason,
                )
            )
        session.commit()


def _previous_status(session: Session, run: ConnectorRun) -> RunStatus | None:
    """Return the status of the connector's run before ``run``.

    Test runs and Process again runs touch only chosen messages, so they do not count.
    """
    return session.scalars(
        sa.select(ConnectorRun.status)
        .where(
            ConnectorRun.connector_id == run.connector_id,
            ConnectorRun.id < run.id,
            ConnectorRun.trigger.not_in(("test", "retry")),
        )
        .order_by(ConnectorRun.id.desc())
        .limit(1)
    ).first()


def _notify_failure(session: Session, run: ConnectorRun, error: str) -> None:
    """Tell the people responsible when a connector starts failing, not on every run."""
    if _previous_status(session, run) == RunStatus.FAILED:
        return
    connector = session.get(Connector, run.connector_id)
    if connector is not None:
        notifications.run_failed(session, connector, run.id, error)


def _imap_settings(ctx: IntakeContext, settings: ConnectorSettings) -> ImapSettings:
    return ImapSettings(
        host=settings.host,
        port=settings.port,
        use_ssl=settings.use_ssl,
        username=settings.username,
        folder=settings.folder,
        timeout=ctx.mail_timeout,
        ca_file=ctx.ca_file,
    )


def login(
    ctx: IntakeContext, settings: ConnectorSettings, *, readonly: bool = False
) -> MailboxSession:
    """Open the connector's folder; an OAuth2 token the server rejects is refreshed once."""
    imap_settings = _imap_settings(ctx, settings)
    if settings.auth_method == AuthMethod.PASSWORD.value:
        if settings.password_encrypted is None:
            raise MailboxError("No password is saved for this connector; enter it and save")
        return open_mailbox(
            imap_settings, password=ctx.box.decrypt(settings.password_encrypted), readonly=readonly
        )

    if settings.mail_account_id is None:
        raise ConsentRequired('This connector has no OAuth2 token yet; click "Generate new token"')
    token = ctx.tokens.access_token(settings.mail_account_id)
    try:
        return open_mailbox(imap_settings, access_token=token, readonly=readonly)
    except AuthenticationFailed as first:
        # The server may have revoked the token before its expiry: refresh once.
        logger.info("server rejected the access token; refreshing and retrying once")
        token = ctx.tokens.access_token(settings.mail_account_id, rejected=token)
        try:
            return open_mailbox(imap_settings, access_token=token, readonly=readonly)
        except AuthenticationFailed as second:
            reason = (
                f"{settings.host} rejected a freshly refreshed access token for "
                f"{settings.username!r} ({second}). Check that Username is the address "
                'that gave consent, then click "Generate new token".'
            )
            with ctx.db.session() as session:
                mark_account(session, settings.mail_account_id, TokenStatus.NEEDS_CONSENT, reason)
            raise ConsentRequired(reason) from first
