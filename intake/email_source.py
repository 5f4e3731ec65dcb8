"""Processing one IMAP folder: fetch in batches, make jobs, then act on the mail.

Small messages are fetched in batches and extracted in memory. A message larger
than LARGE_MESSAGE_BYTES is fetched alone, in pieces, into a temporary file in
the run's work directory, and extracted from that file, so the memory a run
needs does not grow with the size of such a message.

Order of steps, which the no-loss and no-duplicate guarantees rest on:
fetch, extract to disk, commit jobs with ledger rows, then delete (or move,
or mark seen) exactly those UIDs, then mark the ledger rows done. A crash
anywhere leaves the message in the folder; the ledger turns the next run
into the after-processing action only.

A message that is quarantined moves to the quarantine folder, when the
connector has one, only after its failure row is committed. The row records
the folder before the move, so a crash during the move leaves a trace.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from extraction import ExtractionOptions, extract_files, parse_message_info
from imapsession import MailboxError, MailboxSession
from models import Aggregation, LedgerState, MessageFailure, ProcessedMessage
from robotcode import rules

from .context import IntakeContext
from .failures import (
    DEFAULT_MAX_ATTEMPTS,
    clear_failures,
    clear_moving,
    mark_moving,
    quarantined_uids,
    record_failure,
    record_moved,
)
from .jobs import ConnectorSettings, PreparedMessage, commit_jobs, find_earlier, record_duplicate
from .outcome import RunOutcome
from .stores import copy_failed, copy_jobs

logger = logging.getLogger(__name__)

SAVE_FAILED = "Could not save the job; see the worker log."

# Messages larger than this (RFC822.SIZE, in bytes) are fetched alone, in pieces,
# into a file. Smaller ones are fetched in batches, which is faster, and a
# batch's memory is bounded by IntakeContext.fetch_batch_bytes.
LARGE_MESSAGE_BYTES = 1024 * 1024


class MailboxRun:
    """One pass over a connector's folder."""

    def __init__(
        self,
        ctx: IntakeContext,
        settings: ConnectorSettings,
        run_id: int,
        mailbox: MailboxSession,
        outcome: RunOutcome,
        workdir: Path,
        lock: redis.lock.Lock | None,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.run_id = run_id
        self.mailbox = mailbox
        self.outcome = outcome
        self.workdir = workdir
        self.lock = lock
        self.uidvalidity = mailbox.uidvalidity
        self.max_attempts = int(settings.options.get("max_attempts") or DEFAULT_MAX_ATTEMPTS)
        self.extraction = ExtractionOptions(
            include_inline_images=bool(settings.options.get("include_inline_images")),
            unpack_zip=bool(settings.options.get("unpack_zip")),
        )
        self.trash: str | None = None
        if settings.after_processing == "delete" and settings.provider == "google":
            # Gmail keeps an expunged message in All Mail; moving it to the
            # folder flagged \Trash really removes it.
            self.trash = mailbox.trash_folder()
        # Messages quarantined in this run whose failure is not committed yet,
        # with their problem text: UID -> (message, reason).
        self.to_quarantine: dict[int, tuple[PreparedMessage | None, str]] = {}
        self.quarantine_folder_checked = False

    # Listing -----------------------------------------------------------------

    def candidate_uids(self) -> list[int]:
        """List the folder's UIDs that this connector may still act on."""
        cutoff = self.settings.process_mail_after
        uids = self.mailbox.search_uids(
            unseen_only=self.settings.after_processing == "mark_seen",
            since=cutoff.date() if cutoff else None,
        )
        if cutoff is not None and uids:
            arrived = self.mailbox.internal_dates(uids)
            uids = [uid for uid in uids if arrived.get(uid, cutoff) >= cutoff]
        return uids

    def ledger(self, uids: list[int]) -> dict[int, LedgerState]:
        states: dict[int, LedgerState] = {}
        with self.ctx.db.session() as session:
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                rows = session.execute(
                    sa.select(ProcessedMessage.uid, ProcessedMessage.state).where(
                        ProcessedMessage.connector_id == self.settings.id,
                        ProcessedMessage.uidvalidity == self.uidvalidity,
                        ProcessedMessage.uid.in_(chunk),
                    )
                )
                states.update({int(uid): state for uid, state in rows})
        return states

    # After processing --------------------------------------------------------

    def finish(self, uids: list[int]) -> None:
        """Run the after-processing action on ``uids`` and mark their ledger rows done."""
        if not uids:
            return
        self.act_on(uids)
        with self.ctx.db.session() as session:
            session.execute(
                sa.update(ProcessedMessage)
                .where(
                    ProcessedMessage.connector_id == self.settings.id,
                    ProcessedMessage.uidvalidity == self.uidvalidity,
                    ProcessedMessage.uid.in_(uids),
                    ProcessedMessage.state == LedgerState.COMMITTED,
                )
                .values(state=LedgerState.DELETED, deleted_at=datetime.now(UTC))
            )
            clear_failures(session, self.settings.id, self.uidvalidity, uids)
            session.commit()
        self.outcome.messages_deleted += len(uids)

    def act_on(self, uids: list[int]) -> None:
        """Delete, move or mark seen ``uids`` of the selected folder, per After processing."""
        action = self.settings.after_processing
        if action == "move" and self.settings.move_to_folder:
            self.mailbox.move(uids, self.settings.move_to_folder)
        elif action == "mark_seen":
            self.mailbox.mark_seen(uids)
        else:
            self.mailbox.delete(uids, trash_folder=self.trash)

    # Quarantine folder ---------------------------------------------------------

    def move_to_quarantine(self, uids: list[int]) -> str | None:
        """Move quarantined ``uids`` to the quarantine folder; return an error text if that fails.

        The caller has committed their failure rows. The folder is created
        when it is missing.
        """
        folder = self.settings.quarantine_folder
        if not folder or not uids:
            return None
        with self.ctx.db.session() as session:
            mark_moving(session, self.settings.id, self.uidvalidity, uids, folder)
            session.commit()
        try:
            if not self.quarantine_folder_checked:
                if self.mailbox.ensure_folder(folder):
                    logger.info("created the quarantine folder %r", folder)
                self.quarantine_folder_checked = True
            copied = self.mailbox.move(uids, folder)
        except MailboxError as exc:
            logger.warning("moving uids %s to the quarantine folder failed: %s", uids, exc)
            with self.ctx.db.session() as session:
                clear_moving(session, self.settings.id, self.uidvalidity, uids)
                session.commit()
            return (
                f"Moving it to the quarantine folder failed: {exc}. It stays in the folder, "
                "and runs skip it; check Quarantine folder on the connector form."
            )
        if copied is not None:
            with self.ctx.db.session() as session:
                record_moved(
                    session, self.settings.id, self.uidvalidity, copied.uids, copied.uidvalidity
                )
                session.commit()
        logger.info("moved quarantined uids %s to %r", uids, folder)
        return None

    def move_quarantined(self) -> None:
        """Move the messages quarantined since the last commit, and report each one."""
        pending, self.to_quarantine = self.to_quarantine, {}
        if not pending:
            return
        error = self.move_to_quarantine(list(pending))
        for uid, (message, reason) in pending.items():
            if error is None:
                reason += f" It was moved to folder {self.settings.quarantine_folder!r}."
            else:
                reason += f" {error}"
            self.outcome.problem(uid, message, reason)

    def move_stranded(self, uids: list[int]) -> None:
        """Move quarantined messages still in the folder, as after an earlier failed move."""
        if not uids or not self.settings.quarantine_folder:
            return
        error = self.move_to_quarantine(uids)
        if error is None:
            return
        with self.ctx.db.session() as session:
            rows = session.execute(
                sa.select(
                    MessageFailure.uid,
                    MessageFailure.message_id,
                    MessageFailure.sender,
                    MessageFailure.subject,
                ).where(
                    MessageFailure.connector_id == self.settings.id,
                    MessageFailure.uidvalidity == self.uidvalidity,
                    MessageFailure.uid.in_(uids),
                )
            ).all()
        for uid, message_id, sender, subject in rows:
            reason = f"This quarantined e-mail was not moved. {error}"
            self.outcome.problems.append((int(uid), message_id, sender, subject, reason))

    # The pass ------------------------------------------------------------------

    def process(self, only_uids: list[int] | None = None) -> None:
        """Process the folder, or only ``only_uids`` (Finish Test)."""
        uids = self.candidate_uids()
        if only_uids is not None:
            wanted = set(only_uids)
            uids = [uid for uid in uids if uid in wanted]
        self.outcome.messages_seen = len(uids)

        states = self.ledger(uids)
        interrupted = [uid for uid in uids if states.get(uid) == LedgerState.COMMITTED]
        if interrupted:
            logger.info("finishing the interrupted action on %d messages", len(interrupted))
            self.finish(interrupted)
        with self.ctx.db.session() as session:
            quarantined = quarantined_uids(session, self.settings.id, self.uidvalidity)
        self.move_stranded([uid for uid in uids if uid in quarantined])
        if only_uids is not None:
            # Finish Test lists these messages, so report why one of them made no job.
            for uid in uids:
                if uid in quarantined and uid not in states:
                    self.outcome.problem(
                        uid,
                        None,
                        "This e-mail is quarantined, so Finish Test did not process it. "
                        "Click Process again in the quarantine list to retry it.",
                    )
        todo = [uid for uid in uids if uid not in states and uid not in quarantined]

        pending: list[PreparedMessage] = []  # batch aggregation: one job at the end
        sizes = self.mailbox.sizes(todo) if todo else {}
        groups = batches(
            todo,
            sizes,
            self.ctx.fetch_batch_size,
            self.ctx.fetch_batch_bytes,
            alone_bytes=LARGE_MESSAGE_BYTES,
        )
        for batch in groups:
            if self.lock is not None:
                self.lock.reacquire()
            if sizes.get(batch[0], 0) > LARGE_MESSAGE_BYTES:
                prepared = self.prepare_large(batch[0])
            else:
                prepared = self.prepare_batch(batch)
            if self.settings.aggregation == Aggregation.BATCH:
                pending.extend(prepared)
                continue
            self.finish(self.commit(prepared))
        if pending:
            self.finish(self.commit(pending))

    def prepare_batch(self, batch: list[int]) -> list[PreparedMessage]:
        """Fetch ``batch`` in one round trip and extract each message in memory."""
        fetched = [
            (message.uid, message.raw, hashlib.sha256(message.raw).hexdigest())
            for message in self.mailbox.fetch(batch)
        ]
        return self.prepare_fetched(fetched)

    def prepare_large(self, uid: int) -> list[PreparedMessage]:
        """Fetch one message in pieces into a temporary file and extract it from there.

        TemporaryFile removes the file's name at once (on Linux it never has one),
        so the file is gone when closed, even after a crash. The content hash is
        computed while the pieces arrive and equals the hash of the whole
        message's bytes, as for a batch.
        """
        with spool_message(self.mailbox, uid, self.workdir) as spooled:
            if spooled is None:
                logger.info("uid %s is no longer in the folder", uid)
                return []
            return self.prepare_fetched([(uid, spooled.file, spooled.sha256)])

    def prepare_fetched(
        self, fetched: Sequence[tuple[int, bytes | BinaryIO, str]]
    ) -> list[PreparedMessage]:
        """Prepare fetched messages, given as (uid, raw message, content hash)."""
        prepared: list[PreparedMessage] = []
        repeated: list[int] = []
        with self.ctx.db.session() as session:
            earlier_by_hash = find_earlier(
                session, self.settings.id, [content_hash for _uid, _raw, content_hash in fetched]
            )
            for uid, raw, content_hash in fetched:
                message = self.prepare(session, uid, raw, content_hash, earlier_by_hash)
                if message is None:
                    continue
                if message.files:
                    prepared.append(message)
                else:
                    repeated.append(message.uid)
            session.commit()
        self.move_quarantined()
        self.finish(repeated)
        return prepared

    def prepare(
        self,
        session: Session,
        uid: int,
        raw: bytes | BinaryIO,
        content_hash: str,
        earlier_by_hash: dict[str, ProcessedMessage],
    ) -> PreparedMessage | None:
        """Extract one message's files; return None when it makes no job now.

        ``raw`` is the message's bytes or a file that contains them. A message
        already turned into a job comes back with no files, so the caller only
        runs the after-processing action on it.
        """
        earlier = earlier_by_hash.get(content_hash)
        if earlier is not None:
            info = parse_message_info(_from_start(raw))
            if earlier.message_id is None or earlier.message_id == info.message_id:
                # Same bytes already made a job, before the UIDVALIDITY changed.
                logger.info("uid %s repeats an already processed message", uid)
                record_duplicate(session, self.settings, self.uidvalidity, uid, earlier)
                return PreparedMessage(uid=uid, content_hash=content_hash, info=info, files=[])

        if self.settings.rules:
            info = parse_message_info(_from_start(raw))
            accepted, reason = rules.message_accepted(self.settings.rules, info)
            if not accepted:
                logger.info("uid %s skipped: %s", uid, reason)
                self.skip(session, uid, content_hash, info.message_id)
                return None

        result = extract_files(_from_start(raw), self.workdir, self.extraction)
        files = [f for f in result.files if rules.file_accepted(self.settings.rules, f.name)]
        prepared = PreparedMessage(
            uid=uid, content_hash=content_hash, info=result.info, files=files
        )
        if not files:
            detail = "; ".join(result.problems)
            if detail:
                reason = f"No file could be read from the e-mail: {detail}"
            elif result.files:
                reason = "No attachment matches the connector's file patterns"
            else:
                reason = "The e-mail has no attachments, so there is nothing to make a job from"
            self.fail(session, uid, prepared, f"{reason}.", raw)
            return None
        for problem in result.problems:
            self.outcome.problem(
                uid, prepared, f"Job created, but part of the e-mail was damaged: {problem}"
            )
        return prepared

    def skip(self, session: Session, uid: int, content_hash: str, message_id: str | None) -> None:
        session.add(
            ProcessedMessage(
                connector_id=self.settings.id,
                uidvalidity=self.uidvalidity,
                uid=uid,
                message_id=message_id[:998] if message_id else None,
                content_hash=content_hash,
                state=LedgerState.SKIPPED,
            )
        )
        self.outcome.messages_skipped += 1

    def fail(
        self,
        session: Session,
        uid: int,
        message: PreparedMessage | None,
        reason: str,
        raw: bytes | BinaryIO | None = None,
    ) -> None:
        """Count a failed attempt at ``uid`` and report it; the caller commits ``session``.

        ``reason`` describes the failure, and this method adds where the message stays.
        """
        quarantined = record_failure(
            session,
            connector_id=self.settings.id,
            uidvalidity=self.uidvalidity,
            uid=uid,
            info=message.info if message else None,
            reason=reason,
            max_attempts=self.max_attempts,
            now=datetime.now(UTC),
        )
        moving = quarantined and bool(self.settings.quarantine_folder)
        if not moving:
            reason += f" It stays in {self.folder_text()}."
        if quarantined:
            reason += (
                f" It failed {self.max_attempts} times and is now quarantined: runs skip it "
                "until someone clicks Process again."
            )
            copy_error = self.store_failed(uid, message, raw)
            if copy_error:
                reason += f" {copy_error}"
        if moving:
            # Reported after the commit, when the move has succeeded or failed.
            self.to_quarantine[uid] = (message, reason)
            return
        self.outcome.problem(uid, message, reason)

    def folder_text(self) -> str:
        """Name the folder that this pass reads, for problem texts."""
        return "the folder"

    def store_failed(
        self, uid: int, message: PreparedMessage | None, raw: bytes | BinaryIO | None
    ) -> str | None:
        """Copy a quarantined message's files, or the e-mail itself, to the error store."""
        files = [(f.path, f.name) for f in message.files] if message and message.files else []
        if not files and raw is not None:
            eml = self.workdir / f"uid-{uid}.eml"
            if isinstance(raw, bytes):
                eml.write_bytes(raw)
            else:
                raw.seek(0)
                with eml.open("wb") as copy:
                    shutil.copyfileobj(raw, copy)
            subject = message.info.subject if message else None
            files = [(eml, f"{subject or f'message {uid}'}.eml")]
        return copy_failed(self.ctx, self.settings.id, files, f"message-{uid}")

    def commit(self, messages: list[PreparedMessage]) -> list[int]:
        """Commit the jobs of ``messages`` and return the UIDs that are done.

        The whole batch goes in one transaction; if that fails, each message is
        tried alone so one bad message does not hold back the others.
        """
        if not messages:
            return []
        with self.ctx.db.session() as session:
            try:
                self.created(self.commit_in(session, messages))
                return [message.uid for message in messages]
            except Exception:
                if self.settings.aggregation == Aggregation.BATCH or len(messages) == 1:
                    logger.exception("saving the jobs failed")
                    self.failed_to_save(messages)
                    return []
                logger.warning(
                    "saving %d messages together failed; trying one by one", len(messages)
                )
        saved = []
        for message in messages:
            with self.ctx.db.session() as session:
                try:
                    self.created(self.commit_in(session, [message]))
                    saved.append(message.uid)
                except Exception:
                    logger.exception("saving the job of uid %s failed", message.uid)
                    self.failed_to_save([message])
        return saved

    def commit_in(self, session: Session, messages: list[PreparedMessage]) -> list[int]:
        return commit_jobs(
            session, self.settings, self.run_id, self.uidvalidity, messages, self.ctx.store
        )

    def created(self, job_ids: list[int]) -> None:
        self.outcome.jobs_created += len(job_ids)
        self.outcome.created_job_ids.extend(job_ids)
        copy_error = copy_jobs(self.ctx, self.settings.id, job_ids)
        if copy_error:
            self.outcome.problem(None, None, copy_error)

    def failed_to_save(self, messages: list[PreparedMessage]) -> None:
        with self.ctx.db.session() as session:
            for message in messages:
                self.fail(session, message.uid, message, SAVE_FAILED)
            session.commit()
        self.move_quarantined()


class _HashingWriter:
    """Writes to a file and computes the SHA-256 of everything written."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self.sha256.update(data)
        return self._out.write(data)


@dataclass(frozen=True)
class SpooledMessage:
    """A message fetched into an open temporary file, with the SHA-256 of its bytes."""

    file: BinaryIO
    sha256: str


@contextlib.contextmanager
def spool_message(
    mailbox: MailboxSession, uid: int, workdir: Path | str
) -> Iterator[SpooledMessage | None]:
    """Fetch one message in pieces into a temporary file; yield None when it is gone.

    TemporaryFile removes the file's name at once (on Linux it never has one),
    so the file is gone when closed, even after a crash. The hash is computed
    while the pieces arrive and equals the hash of the whole message's bytes.
    """
    with tempfile.TemporaryFile(dir=workdir) as spool:
        hashing = _HashingWriter(spool)
        size = mailbox.fetch_into(uid, hashing)
        if size is None:
            yield None
            return
        logger.debug("uid %s fetched in pieces, %d bytes", uid, size)
        spool.seek(0)
        yield SpooledMessage(spool, hashing.sha256.hexdigest())


def _from_start(raw: bytes | BinaryIO) -> bytes | BinaryIO:
    """Return ``raw``, a file positioned at its start again, because each reader moves it."""
    if not isinstance(raw, bytes):
        raw.seek(0)
    return raw


def batches(
    uids: list[int],
    sizes: dict[int, int],
    count: int,
    max_bytes: int,
    *,
    alone_bytes: int | None = None,
) -> list[list[int]]:
    """Group ``uids`` so each UID FETCH has at most ``count`` messages and ``max_bytes``.

    A message larger than ``alone_bytes`` gets a group of its own.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        alone = alone_bytes is not None and size > alone_bytes
        if current and (alone or len(current) >= count or current_bytes + size > max_bytes):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(uid)
        current_bytes += size
        if alone:
            groups.append(current)
            current, current_bytes = [], 0
    if current:
        groups.append(current)
    return groups


__all__ = ["MailboxError", "MailboxRun", "SpooledMessage", "batches", "spool_message"]
