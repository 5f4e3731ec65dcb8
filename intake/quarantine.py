"""Process again: one quarantined message, read from the quarantine folder it was moved to.

The message keeps its identity from the scanned folder (the failure row's
UIDVALIDITY and UID) for the ledger and the failure row, because UIDs of two
folders may coincide. Only the IMAP commands use its UID in the quarantine
folder. The order of steps is that of a normal pass: commit the job with its
ledger row, then run the after-processing action, then clear the failure
row. A crash after the commit leaves the row listed, and Process again then
finds the ledger row and only finishes the action, so no second job is made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from models import LedgerState

from .email_source import MailboxRun, spool_message
from .failures import get_failure, release
from .jobs import find_earlier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuarantinedMessage:
    """A failure row's facts, copied so that no ORM object outlives its session."""

    failure_id: int
    uidvalidity: int
    uid: int
    message_id: str | None
    moved_to_folder: str
    moved_uidvalidity: int | None
    moved_uid: int | None


class QuarantineRetry(MailboxRun):
    """Process one quarantined message again, from the quarantine folder."""

    moved: QuarantinedMessage | None = None
    # The message's UID in the quarantine folder, by its UID in the scanned folder.
    located: dict[int, int]

    def folder_text(self) -> str:
        if self.moved is None:
            return super().folder_text()
        return f"folder {self.moved.moved_to_folder!r}"

    def act_on(self, uids: list[int]) -> None:
        """Run the after-processing action on the moved copies of ``uids``.

        With "mark seen", a processed message belongs in the scanned folder,
        so it goes back there marked seen, where runs skip it.
        """
        moved_uids = [self.located[uid] for uid in uids]
        if self.settings.after_processing == "mark_seen":
            self.mailbox.mark_seen(moved_uids)
            self.mailbox.move(moved_uids, self.settings.folder)
            return
        super().act_on(moved_uids)

    def process_failure(self, failure_id: int) -> None:
        """Find the quarantined message, make its job once, and take it out of quarantine."""
        moved = self.load(failure_id)
        if moved is None:
            return
        self.moved = moved
        found = self.locate(moved)
        if found is None:
            self.not_found(moved)
            return
        # The ledger and the failure row name the message by its UID in the scanned folder.
        self.uidvalidity = moved.uidvalidity
        self.located = {moved.uid: found}
        self.outcome.messages_seen = 1

        if self.ledger([moved.uid]).get(moved.uid) in (LedgerState.COMMITTED, LedgerState.DELETED):
            logger.info("uid %s already made its job; finishing the action only", moved.uid)
            self.finish([moved.uid])
            return
        # In pieces into a file, as a run reads a large message: a quarantined
        # message is often a large one.
        with spool_message(self.mailbox, found, self.workdir) as spooled:
            if spooled is None:
                self.not_found(moved)
                return
            with self.ctx.db.session() as session:
                earlier = find_earlier(session, self.settings.id, [spooled.sha256])
                message = self.prepare(session, moved.uid, spooled.file, spooled.sha256, earlier)
                session.commit()
        if message is None:
            if self.outcome.messages_skipped:
                self.return_skipped(moved, found)
            return
        if not message.files:
            self.finish([moved.uid])  # The same e-mail made a job before.
            return
        self.finish(self.commit([message]))

    def load(self, failure_id: int) -> QuarantinedMessage | None:
        with self.ctx.db.session() as session:
            failure = get_failure(session, self.settings.id, failure_id)
            if failure is None or failure.quarantined_at is None:
                logger.info("message failure %s is no longer quarantined", failure_id)
                return None
            if failure.moved_to_folder is None:
                # Never moved, so it waits in the scanned folder for the next run.
                release(session, self.settings.id, failure_id)
                session.commit()
                logger.info("message failure %s was not moved; released it", failure_id)
                return None
            return QuarantinedMessage(
                failure_id=failure.id,
                uidvalidity=failure.uidvalidity,
                uid=failure.uid,
                message_id=failure.message_id,
                moved_to_folder=failure.moved_to_folder,
                moved_uidvalidity=failure.moved_uidvalidity,
                moved_uid=failure.moved_uid,
            )

    def locate(self, moved: QuarantinedMessage) -> int | None:
        """Select the quarantine folder and return the message's UID there, or None.

        The UID from the move is used while the folder's UIDVALIDITY is
        unchanged. Otherwise, or when the server reported no UID, the message
        is searched by its Message-ID.
        """
        uidvalidity = self.mailbox.select(moved.moved_to_folder)
        if (
            moved.moved_uid is not None
            and moved.moved_uidvalidity == uidvalidity
            and self.mailbox.has_uid(moved.moved_uid)
        ):
            return moved.moved_uid
        if moved.message_id:
            matches = self.mailbox.search_message_id(moved.message_id)
            if matches:
                return matches[0]
        return None

    def not_found(self, moved: QuarantinedMessage) -> None:
        """Release the failure row of a message missing from the quarantine folder; report why."""
        folder = self.settings.folder
        uidvalidity = self.mailbox.select(folder)
        still_there = uidvalidity == moved.uidvalidity and self.mailbox.has_uid(moved.uid)
        with self.ctx.db.session() as session:
            release(session, self.settings.id, moved.failure_id)
            session.commit()
        if still_there:
            reason = (
                f"The e-mail was still in folder {folder!r}, because its move to "
                f"{moved.moved_to_folder!r} did not happen. It left quarantine, so the "
                "next run processes it."
            )
        else:
            reason = (
                f"The e-mail is neither in folder {moved.moved_to_folder!r} nor in "
                f"{folder!r}, so it was moved or deleted outside Mailroom. It left the "
                "quarantine list; move it back to the scanned folder to have it processed."
            )
        logger.warning("quarantined uid %s: %s", moved.uid, reason)
        self.outcome.problems.append((moved.uid, moved.message_id, None, None, reason))

    def return_skipped(self, moved: QuarantinedMessage, found: int) -> None:
        """Move back a message that the Robot Code rules now skip, and end its quarantine.

        Skipped messages stay untouched in the scanned folder, so this one goes there too.
        """
        self.mailbox.move([found], self.settings.folder)
        with self.ctx.db.session() as session:
            release(session, self.settings.id, moved.failure_id)
            session.commit()
        logger.info("rules skip uid %s; moved it back to %r", moved.uid, self.settings.folder)
