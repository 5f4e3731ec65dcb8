"""The quarantine folder against a real Dovecot: moving a failing e-mail out of the
scanned folder, and Process again from there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from imapsession import MailboxError, MailboxSession
from imapsession.session import parse_copyuid
from intake import run_connector
from models import (
    AfterProcessing,
    Job,
    LedgerState,
    MessageFailure,
    ProcessedMessage,
    RunStatus,
)

from .mailhelpers import PDF_BYTES, message_with_files, message_without_files
from .servers import PASSWORD_USER, MailStack
from .test_intake import settings, stack  # noqa: F401  (fixtures)
from .test_intake_options import _change, _jobs, _run, connector_id  # noqa: F401

# Any PDF fails while the rules take only .docx files; removing the rule fixes it.
ONLY_DOCX = {"include_files": ["*.docx"]}


def _pdf_message(subject: str) -> bytes:
    return message_with_files(subject, [("offer.pdf", PDF_BYTES, "application/pdf")])


def _folder_uids(stack: MailStack, folder: str) -> list[int]:
    return stack.dovecot.list_uids(PASSWORD_USER, folder)


def _uidvalidity(stack: MailStack, folder: str) -> int:
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        status, _ = imap.select(f'"{folder}"', readonly=True)
        assert status == "OK", folder
        _, values = imap.response("UIDVALIDITY")
    return int(values[0])


def _flags(stack: MailStack, folder: str, uid: int) -> bytes:
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.select(f'"{folder}"', readonly=True)
        _, data = imap.uid("FETCH", str(uid), "(FLAGS)")
    return data[0]


def _failure(services) -> MessageFailure:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        return session.scalars(sa.select(MessageFailure)).one()


def _failures(services) -> list[MessageFailure]:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        return list(session.scalars(sa.select(MessageFailure)))


def _process_again(services, connector_id: int, failure_id: int):  # type: ignore[no-untyped-def]
    outcome = run_connector(
        services.intake_context(), connector_id, "retry", quarantined=failure_id
    )
    assert outcome is not None
    return outcome


def _delete_folder(stack: MailStack, folder: str) -> None:
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.delete(f'"{folder}"')


@pytest.fixture
def quarantine(stack: MailStack) -> Iterator[str]:
    """A quarantine folder name of this test alone, deleted afterwards with its messages."""
    folder = f"Mailroom/Errors-{uuid.uuid4().hex[:8]}"
    yield folder
    _delete_folder(stack, folder)


@pytest.fixture
def quarantining(services, connector_id: int, quarantine: str) -> int:  # noqa: F811
    """The options connector, quarantining after one attempt into the test's folder."""
    _change(
        services,
        connector_id,
        options={"max_attempts": 1},
        rules=ONLY_DOCX,
        quarantine_folder=quarantine,
    )
    return connector_id


def _quarantine_one(services, connector_id: int, stack: MailStack, subject: str) -> int:  # type: ignore[no-untyped-def]
    """Deliver a PDF e-mail, let one run quarantine it, and return its failure id."""
    stack.dovecot.deliver(PASSWORD_USER, _pdf_message(subject))
    outcome = _run(services, connector_id)
    assert outcome.status == RunStatus.PARTIAL
    return _failure(services).id


# Moving to the quarantine folder --------------------------------------------


def test_failing_message_moves_after_attempts(services, connector_id, stack, quarantine) -> None:  # noqa: F811
    _change(services, connector_id, options={"max_attempts": 2}, quarantine_folder=quarantine)
    stack.dovecot.deliver(PASSWORD_USER, message_without_files("No files here"))

    first = _run(services, connector_id)
    assert len(first.problems) == 1
    assert first.problems[0][4].endswith("It stays in the folder.")
    assert len(_folder_uids(stack, "INBOX")) == 1

    second = _run(services, connector_id)
    assert len(second.problems) == 1
    reason = second.problems[0][4]
    assert "The e-mail has no attachments" in reason
    assert "now quarantined" in reason
    assert reason.endswith(f"It was moved to folder '{quarantine}'.")
    assert "stays in the folder" not in reason
    assert _folder_uids(stack, "INBOX") == []
    moved = _folder_uids(stack, quarantine)
    assert len(moved) == 1
    assert b"No files here" in stack.dovecot.fetch(PASSWORD_USER, moved[0], quarantine)

    failure = _failure(services)
    assert failure.quarantined_at is not None
    assert failure.attempts == 2
    assert failure.subject == "No files here"
    assert "The e-mail has no attachments" in failure.last_error
    assert failure.moved_to_folder == quarantine
    assert failure.moved_uid == moved[0]
    assert failure.moved_uidvalidity == _uidvalidity(stack, quarantine)

    third = _run(services, connector_id)
    assert third.status == RunStatus.SUCCEEDED
    assert third.problems == []
    assert third.messages_seen == 0


def test_quarantine_folder_is_created_and_subscribed(
    services, quarantining, stack, quarantine
) -> None:
    _quarantine_one(services, quarantining, stack, "Offer")
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        _, subscribed = imap.lsub('""', f'"{quarantine}"')
    assert subscribed[0] is not None
    assert quarantine.encode() in subscribed[0]


def test_move_failure_names_folder_and_retries(services, quarantining, stack, quarantine) -> None:
    _change(services, quarantining, quarantine_folder="Mailroom//Errors")
    stack.dovecot.deliver(PASSWORD_USER, _pdf_message("Offer"))

    outcome = _run(services, quarantining)
    assert outcome.status == RunStatus.PARTIAL
    reason = outcome.problems[0][4]
    assert "Folder 'Mailroom//Errors' does not exist, and creating it failed" in reason
    assert "adjacent hierarchy separators" in reason
    assert "It stays in the folder, and runs skip it; check Quarantine folder" in reason
    assert len(_folder_uids(stack, "INBOX")) == 1
    assert _failure(services).moved_to_folder is None

    # Every run reports the stranded message until the folder is fixed.
    again = _run(services, quarantining)
    assert again.status == RunStatus.PARTIAL
    assert again.problems[0][2] == "client@example.org"
    assert "This quarantined e-mail was not moved" in again.problems[0][4]

    _change(services, quarantining, quarantine_folder=quarantine)
    fixed = _run(services, quarantining)
    assert fixed.status == RunStatus.SUCCEEDED
    assert fixed.problems == []
    assert _folder_uids(stack, "INBOX") == []
    assert len(_folder_uids(stack, quarantine)) == 1
    failure = _failure(services)
    assert failure.moved_to_folder == quarantine
    assert failure.moved_uid == _folder_uids(stack, quarantine)[0]


def test_interrupted_move_is_finished_next_run(
    services, quarantining, stack, quarantine, monkeypatch
) -> None:
    def lose_connection(self, uids, folder):  # type: ignore[no-untyped-def]
        raise OSError("connection reset by the test")

    stack.dovecot.deliver(PASSWORD_USER, _pdf_message("Offer"))
    with monkeypatch.context() as patch:
        patch.setattr(MailboxSession, "move", lose_connection)
        with pytest.raises(OSError):
            _run(services, quarantining)
    # The failure and the planned folder were committed before the move.
    failure = _failure(services)
    assert failure.quarantined_at is not None
    assert failure.moved_to_folder == quarantine
    assert failure.moved_uid is None
    assert len(_folder_uids(stack, "INBOX")) == 1

    outcome = _run(services, quarantining)
    assert outcome.status == RunStatus.SUCCEEDED
    assert _folder_uids(stack, "INBOX") == []
    assert _failure(services).moved_uid == _folder_uids(stack, quarantine)[0]


def test_quarantined_messages_move_when_option_set(
    services, connector_id, stack, quarantine
) -> None:  # noqa: F811
    _change(services, connector_id, options={"max_attempts": 1}, rules=ONLY_DOCX)
    stack.dovecot.deliver(PASSWORD_USER, _pdf_message("Quarantined before"))
    _run(services, connector_id)
    assert _failure(services).moved_to_folder is None
    assert len(_folder_uids(stack, "INBOX")) == 1

    _change(services, connector_id, quarantine_folder=quarantine)
    outcome = _run(services, connector_id)
    assert outcome.status == RunStatus.SUCCEEDED
    assert _folder_uids(stack, "INBOX") == []
    assert len(_folder_uids(stack, quarantine)) == 1
    assert _failure(services).moved_to_folder == quarantine


# Process again ---------------------------------------------------------------


def test_process_again_makes_job_once(services, quarantining, stack, quarantine) -> None:
    failure_id = _quarantine_one(services, quarantining, stack, "Offer to fix")
    assert _folder_uids(stack, "INBOX") == []
    assert len(_folder_uids(stack, quarantine)) == 1

    _change(services, quarantining, rules={})
    outcome = _process_again(services, quarantining, failure_id)
    assert outcome.status == RunStatus.SUCCEEDED
    assert outcome.jobs_created == 1
    assert outcome.messages_deleted == 1
    assert _folder_uids(stack, quarantine) == []
    assert _folder_uids(stack, "INBOX") == []
    assert _failures(services) == []
    jobs = _jobs(services)
    assert [job.source_subject for job in jobs] == ["Offer to fix"]
    assert [file.original_name for file in jobs[0].files] == ["offer.pdf"]
    with services.db.session() as session:
        ledger = session.scalars(sa.select(ProcessedMessage)).one()
        assert ledger.state == LedgerState.DELETED

    repeated = _process_again(services, quarantining, failure_id)
    assert repeated.jobs_created == 0
    assert _run(services, quarantining).jobs_created == 0
    assert len(_jobs(services)) == 1


def test_process_again_still_failing_stays(services, quarantining, stack, quarantine) -> None:
    failure_id = _quarantine_one(services, quarantining, stack, "Still a PDF")

    outcome = _process_again(services, quarantining, failure_id)
    assert outcome.status == RunStatus.PARTIAL
    assert outcome.jobs_created == 0
    reason = outcome.problems[0][4]
    assert "No attachment matches the connector's file patterns" in reason
    assert reason.endswith(f"It stays in folder '{quarantine}'.")
    assert len(_folder_uids(stack, quarantine)) == 1
    failure = _failure(services)
    assert failure.id == failure_id
    assert failure.attempts == 2
    assert failure.quarantined_at is not None
    assert failure.moved_to_folder == quarantine


def test_process_again_with_mark_seen(services, quarantining, stack, quarantine) -> None:
    _change(services, quarantining, after_processing=AfterProcessing.MARK_SEEN)
    failure_id = _quarantine_one(services, quarantining, stack, "Keep it read")

    _change(services, quarantining, rules={})
    outcome = _process_again(services, quarantining, failure_id)
    assert outcome.jobs_created == 1
    assert _folder_uids(stack, quarantine) == []
    back = _folder_uids(stack, "INBOX")
    assert len(back) == 1
    assert b"\\Seen" in _flags(stack, "INBOX", back[0])
    assert _failures(services) == []

    # Back in the scanned folder, marked seen: runs leave it alone.
    assert _run(services, quarantining).jobs_created == 0
    assert len(_jobs(services)) == 1


def test_process_again_with_move(services, quarantining, stack, quarantine) -> None:
    processed = f"Processed-{uuid.uuid4().hex[:8]}"
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.create(f'"{processed}"')
    try:
        _change(
            services,
            quarantining,
            after_processing=AfterProcessing.MOVE,
            move_to_folder=processed,
        )
        failure_id = _quarantine_one(services, quarantining, stack, "Move when done")

        _change(services, quarantining, rules={})
        assert _process_again(services, quarantining, failure_id).jobs_created == 1
        assert _folder_uids(stack, quarantine) == []
        assert len(_folder_uids(stack, processed)) == 1
    finally:
        _delete_folder(stack, processed)


def test_process_again_searches_message_id(services, quarantining, stack, quarantine) -> None:
    failure_id = _quarantine_one(services, quarantining, stack, "Found by Message-ID")
    # As after a server that sent no COPYUID, or a crash right after the move.
    with services.db.session() as session:
        session.execute(sa.update(MessageFailure).values(moved_uid=None, moved_uidvalidity=None))
        session.commit()

    _change(services, quarantining, rules={})
    outcome = _process_again(services, quarantining, failure_id)
    assert outcome.jobs_created == 1
    assert _folder_uids(stack, quarantine) == []


def test_process_again_after_crash_makes_no_second_job(
    services, quarantining, stack, quarantine, monkeypatch
) -> None:
    failure_id = _quarantine_one(services, quarantining, stack, "Crash after commit")
    _change(services, quarantining, rules={})

    def server_fails(self, uids, trash_folder=None):  # type: ignore[no-untyped-def]
        raise MailboxError("UID STORE \\Deleted failed: the test server refused")

    with monkeypatch.context() as patch:
        patch.setattr(MailboxSession, "delete", server_fails)
        failed = _process_again(services, quarantining, failure_id)
    assert failed.status == RunStatus.FAILED
    assert failed.jobs_created == 1
    assert len(_folder_uids(stack, quarantine)) == 1
    assert _failure(services).id == failure_id
    with services.db.session() as session:
        assert session.scalars(sa.select(ProcessedMessage.state)).one() == LedgerState.COMMITTED

    finished = _process_again(services, quarantining, failure_id)
    assert finished.status == RunStatus.SUCCEEDED
    assert finished.jobs_created == 0
    assert finished.messages_deleted == 1
    assert _folder_uids(stack, quarantine) == []
    assert _failures(services) == []
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(Job.id))) == 1


def test_process_again_reports_missing_message(services, quarantining, stack, quarantine) -> None:
    failure_id = _quarantine_one(services, quarantining, stack, "Deleted by hand")
    stack.empty_folder(PASSWORD_USER, quarantine)

    outcome = _process_again(services, quarantining, failure_id)
    assert outcome.status == RunStatus.PARTIAL
    reason = outcome.problems[0][4]
    assert f"The e-mail is neither in folder '{quarantine}' nor in 'INBOX'" in reason
    assert "It left the quarantine list" in reason
    assert _failures(services) == []
    assert _jobs(services) == []


def test_process_again_of_unmoved_message_releases(
    services,
    connector_id,
    stack,  # noqa: F811
) -> None:
    _change(services, connector_id, options={"max_attempts": 1}, rules=ONLY_DOCX)
    failure_id = _quarantine_one(services, connector_id, stack, "Never moved")

    outcome = _process_again(services, connector_id, failure_id)
    assert outcome.jobs_created == 0
    assert _failures(services) == []
    _change(services, connector_id, rules={})
    assert _run(services, connector_id).jobs_created == 1


# COPYUID ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"1796425994 1:2 7:8", (1796425994, {1: 7, 2: 8})),
        (b"38505 304,319:320 3956:3958", (38505, {304: 3956, 319: 3957, 320: 3958})),
        (b"5 9 4", (5, {9: 4})),
        (b"5 3:1 10:12", (5, {1: 10, 2: 11, 3: 12})),
    ],
)
def test_parse_copyuid(value: bytes, expected: tuple[int, dict[int, int]]) -> None:
    copied = parse_copyuid(value)
    assert copied is not None
    assert (copied.uidvalidity, copied.uids) == expected


@pytest.mark.parametrize("value", [b"", b"5", b"5 1:2 7", b"x 1 2", b"5 1,a 2,3"])
def test_parse_copyuid_rejects_bad_text(value: bytes) -> None:
    assert parse_copyuid(value) is None
