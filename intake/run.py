"""One run of one connector.

Order of steps, which the no-loss and no-duplicate guarantees rest on:
fetch, extract to disk, commit jobs with ledger rows, then delete exactly
those UIDs, then mark the ledger rows deleted. A crash anywhere leaves the
message in the folder; the ledger turns the next run into a delete only.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from extraction import extract_files, parse_message_info
from imapsession import (
    AuthenticationFailed,
    ImapSettings,
    MailboxError,
    MailboxSession,
    open_mailbox,
)
from logconfig import connector_id_var, run_id_var
from mailauth import ConsentRequired, TokenError
from mailauth.tokens import mark_account
from models import (
    Aggregation,
    AuthMethod,
    Connector,
    ConnectorRun,
    ProcessedMessage,
    RunProblem,
    RunStatus,
    TokenStatus,
)
from outgoing import notifications

from .context import IntakeContext
from .jobs import (
    ConnectorSettings,
    PreparedMessage,
    commit_jobs,
    find_earlier,
    ledgered_uids,
    mark_deleted,
    record_duplicate,
)

logger = logging.getLogger(__name__)

# The run lock expires on its own if a worker dies; it is renewed per batch.
RUN_LOCK_SECONDS = 300


@dataclass
class RunOutcome:
    run_id: int
    status: RunStatus
    messages_seen: int = 0
    jobs_created: int = 0
    messages_deleted: int = 0
    error: str | None = None
    # False when the failure was already announced another way (consent needed).
    notify_failure: bool = True
    problems: list[tuple[int | None, str | None, str | None, str | None, str]] = field(
        default_factory=list
    )  # uid, message_id, sender, subject, reason

    def problem(self, uid: int | None, message: PreparedMessage | None, reason: str) -> None:
        info = message.info if message else None
        self.problems.append(
            (
                uid,
                info.message_id if info else None,
                info.sender if info else None,
                info.subject if info else None,
                reason,
            )
        )


def run_connector(ctx: IntakeContext, connector_id: int, trigger: str) -> RunOutcome | None:
    """Run the connector unless a run of it is already going on.

    Returns None when the connector is gone, inactive for a scheduled run, or
    locked by another run.
    """
    lock = ctx.redis.lock(f"mailroom:connector-run:{connector_id}", timeout=RUN_LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        logger.info("connector %s is already running; skipping this %s run", connector_id, trigger)
        return None
    token = connector_id_var.set(connector_id)
    try:
        return _run(ctx, connector_id, trigger, lock)
    finally:
        connector_id_var.reset(token)
        try:
            lock.release()
        except redis.exceptions.LockError:
            logger.warning(
                "the run lock of connector %s expired before the run ended", connector_id
            )


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
    ctx: IntakeContext, connector_id: int, trigger: str, lock: redis.lock.Lock
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
        with _login(ctx, settings) as mailbox:
            _process(ctx, settings, run_id, mailbox, outcome, workdir, lock)
        outcome.status = RunStatus.PARTIAL if outcome.problems else RunStatus.SUCCEEDED
    except ConsentRequired as exc:
        outcome.status = RunStatus.FAILED
        outcome.error = str(exc)
        outcome.notify_failure = False
        logger.warning("run %s failed: %s", run_id, exc)
    except (MailboxError, TokenError) as exc:
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
        run.error = outcome.error
        if outcome.status == RunStatus.FAILED and outcome.notify_failure:
            _notify_failure(session, run, outcome.error or "unknown error")
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


def _notify_failure(session: Session, run: ConnectorRun, error: str) -> None:
    """Tell the person responsible when a connector starts failing, not on every run."""
    previous = session.scalars(
        sa.select(ConnectorRun.status)
        .where(ConnectorRun.connector_id == run.connector_id, ConnectorRun.id < run.id)
        .order_by(ConnectorRun.id.desc())
        .limit(1)
    ).first()
    if previous == RunStatus.FAILED:
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


def _login(ctx: IntakeContext, settings: ConnectorSettings) -> MailboxSession:
    imap_settings = _imap_settings(ctx, settings)
    if settings.auth_method == AuthMethod.PASSWORD.value:
        if settings.password_encrypted is None:
            raise MailboxError("No password is saved for this connector; enter it and save")
        return open_mailbox(imap_settings, password=ctx.box.decrypt(settings.password_encrypted))

    if settings.mail_account_id is None:
        raise ConsentRequired('This connector has no OAuth2 token yet; click "Generate new token"')
    token = ctx.tokens.access_token(settings.mail_account_id)
    try:
        return open_mailbox(imap_settings, access_token=token)
    except AuthenticationFailed as first:
        # The server may have revoked the token before its expiry: refresh once.
        logger.info("server rejected the access token; refreshing and retrying once")
        token = ctx.tokens.access_token(settings.mail_account_id, rejected=token)
        try:
            return open_mailbox(imap_settings, access_token=token)
        except AuthenticationFailed as second:
            reason = (
                f"{settings.host} rejected a freshly refreshed access token for "
                f"{settings.username!r} ({second}). Check that Username is the address "
                'that gave consent, then click "Generate new token".'
            )
            with ctx.db.session() as session:
                mark_account(session, settings.mail_account_id, TokenStatus.NEEDS_CONSENT, reason)
            raise ConsentRequired(reason) from first


def _batches(uids: list[int], sizes: dict[int, int], count: int, max_bytes: int) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if current and (len(current) >= count or current_bytes + size > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(uid)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


def _prepare(
    session: Session,
    settings: ConnectorSettings,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    earlier_by_hash: dict[str, ProcessedMessage],
    workdir: Path,
    outcome: RunOutcome,
) -> PreparedMessage | None:
    """Extract one message's files; return None when it makes no job now.

    A message already turned into a job comes back with no files, so the
    caller only deletes it.
    """
    content_hash = hashlib.sha256(raw).hexdigest()
    earlier = earlier_by_hash.get(content_hash)
    if earlier is not None:
        info = parse_message_info(raw)
        if earlier.message_id is None or earlier.message_id == info.message_id:
            # Same bytes already made a job, before the folder's UIDVALIDITY changed.
            logger.info("uid %s repeats an already processed message; deleting only", uid)
            record_duplicate(session, settings, uidvalidity, uid, earlier)
            return PreparedMessage(uid=uid, content_hash=content_hash, info=info, files=[])

    result = extract_files(raw, workdir)
    prepared = PreparedMessage(
        uid=uid, content_hash=content_hash, info=result.info, files=result.files
    )
    if not result.files:
        detail = "; ".join(result.problems)
        reason = "The e-mail has no attachments, so there is nothing to make a job from"
        if detail:
            reason = f"No file could be read from the e-mail: {detail}"
        outcome.problem(uid, prepared, f"{reason}. It stays in the folder.")
        return None
    for problem in result.problems:
        outcome.problem(
            uid, prepared, f"Job created, but part of the e-mail was damaged: {problem}"
        )
    return prepared


def _process(
    ctx: IntakeContext,
    settings: ConnectorSettings,
    run_id: int,
    mailbox: MailboxSession,
    outcome: RunOutcome,
    workdir: Path,
    lock: redis.lock.Lock,
) -> None:
    uidvalidity = mailbox.uidvalidity
    uids = mailbox.search_uids()
    outcome.messages_seen = len(uids)
    trash = mailbox.trash_folder() if settings.provider == "google" else None

    def delete(done: list[int]) -> None:
        if not done:
            return
        mailbox.delete(done, trash_folder=trash)
        with ctx.db.session() as session:
            mark_deleted(session, settings.id, uidvalidity, done)
        outcome.messages_deleted += len(done)

    with ctx.db.session() as session:
        interrupted = sorted(ledgered_uids(session, settings.id, uidvalidity, uids))
    if interrupted:
        logger.info("finishing the interrupted delete of %d messages", len(interrupted))
        delete(interrupted)
    todo = [uid for uid in uids if uid not in set(interrupted)]

    pending: list[PreparedMessage] = []  # batch aggregation: one job at the end
    sizes = mailbox.sizes(todo) if todo else {}
    for batch in _batches(todo, sizes, ctx.fetch_batch_size, ctx.fetch_batch_bytes):
        lock.reacquire()
        prepared: list[PreparedMessage] = []
        duplicates: list[int] = []
        fetched_batch = mailbox.fetch(batch)
        with ctx.db.session() as session:
            earlier_by_hash = find_earlier(
                session, settings.id, [hashlib.sha256(f.raw).hexdigest() for f in fetched_batch]
            )
            for fetched in fetched_batch:
                message = _prepare(
                    session, settings, uidvalidity, fetched.uid, fetched.raw, earlier_by_hash,
                    workdir, outcome,
                )  # fmt: skip
                if message is None:
                    continue
                if not message.files:
                    duplicates.append(message.uid)
                else:
                    prepared.append(message)
        delete(duplicates)

        if settings.aggregation == Aggregation.BATCH:
            pending.extend(prepared)
            continue
        delete(_commit(ctx, settings, run_id, uidvalidity, prepared, outcome))

    if pending:
        delete(_commit(ctx, settings, run_id, uidvalidity, pending, outcome))


SAVE_FAILED = "Could not save the job; see the worker log. The e-mail stays in the folder."


def _commit(
    ctx: IntakeContext,
    settings: ConnectorSettings,
    run_id: int,
    uidvalidity: int,
    messages: list[PreparedMessage],
    outcome: RunOutcome,
) -> list[int]:
    """Commit the jobs of ``messages`` and return the UIDs that may be deleted.

    The whole batch goes in one transaction; if that fails, each message is
    tried alone so one bad message does not hold back the others.
    """
    if not messages:
        return []
    with ctx.db.session() as session:
        try:
            outcome.jobs_created += commit_jobs(
                session, settings, run_id, uidvalidity, messages, ctx.store
            )
            return [message.uid for message in messages]
        except Exception:
            if settings.aggregation == Aggregation.BATCH or len(messages) == 1:
                logger.exception("saving the jobs failed")
                for message in messages:
                    outcome.problem(message.uid, message, SAVE_FAILED)
                return []
            logger.warning("saving %d messages together failed; retrying one by one", len(messages))
    saved = []
    for message in messages:
        with ctx.db.session() as session:
            try:
                outcome.jobs_created += commit_jobs(
                    session, settings, run_id, uidvalidity, [message], ctx.store
                )
                saved.append(message.uid)
            except Exception:
                logger.exception("saving the job of uid %s failed", message.uid)
                outcome.problem(message.uid, message, SAVE_FAILED)
    return saved
