"""Connector options against a real Dovecot: aggregation, after-processing,
first activation, quarantine, Robot Code rules and Test Connector."""

from __future__ import annotations

import imaplib
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from intake import run_connector
from intake.failures import release
from intake.preview import preview_connector, take_selection
from models import (
    AfterProcessing,
    Aggregation,
    Connector,
    ConnectorRun,
    Job,
    LedgerState,
    MessageFailure,
    OutboxMessage,
    ProcessedMessage,
    RunStatus,
)

from .mailhelpers import PDF_BYTES, message_with_files, message_without_files
from .servers import PASSWORD_USER, MailStack
from .test_intake import (  # noqa: F401  (fixtures)
    password_connector_id,
    settings,
    stack,
)


@pytest.fixture
def connector_id(services, seeded, stack: MailStack) -> int:
    """A password connector on the STARTTLS port, so no consent is needed."""
    return password_connector_id(services, stack, "Options")


def _change(services, connector_id: int, **values) -> None:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        connector = session.get(Connector, connector_id)
        for key, value in values.items():
            setattr(connector, key, value)
        session.commit()


def _run(services, connector_id: int, trigger: str = "manual"):  # type: ignore[no-untyped-def]
    outcome = run_connector(services.intake_context(), connector_id, trigger)
    assert outcome is not None
    return outcome


def _jobs(services) -> list[Job]:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        jobs = list(session.scalars(sa.select(Job).order_by(Job.id)))
        for job in jobs:
            _ = [f.original_name for f in job.files]
        return jobs


def _two_files(subject: str) -> bytes:
    return message_with_files(
        subject, [("a.pdf", PDF_BYTES, "application/pdf"), ("b.pdf", PDF_BYTES, "application/pdf")]
    )


def test_per_email_aggregation(services, connector_id, stack) -> None:
    _change(services, connector_id, aggregation=Aggregation.PER_EMAIL)
    stack.dovecot.deliver(PASSWORD_USER, _two_files("First order"))
    stack.dovecot.deliver(PASSWORD_USER, _two_files("Second order"))
    outcome = _run(services, connector_id)
    assert outcome.jobs_created == 2
    jobs = _jobs(services)
    assert [job.name for job in jobs] == ["First order", "Second order"]
    assert [[f.original_name for f in job.files] for job in jobs] == [["a.pdf", "b.pdf"]] * 2


def test_move_after_processing(services, connector_id, stack) -> None:
    _change(
        services, connector_id, after_processing=AfterProcessing.MOVE, move_to_folder="Processed"
    )
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.create("Processed")
    stack.dovecot.deliver(PASSWORD_USER, _two_files("Move me"))
    assert _run(services, connector_id).messages_deleted == 1
    assert stack.dovecot.list_uids(PASSWORD_USER) == []
    moved = stack.dovecot.list_uids(PASSWORD_USER, "Processed")
    assert len(moved) == 1
    assert b"Move me" in stack.dovecot.fetch(PASSWORD_USER, moved[0], "Processed")


def test_mark_seen_keeps_mail_and_processes_once(services, connector_id, stack) -> None:
    _change(services, connector_id, after_processing=AfterProcessing.MARK_SEEN)
    stack.dovecot.deliver(PASSWORD_USER, _two_files("Keep me"))
    assert _run(services, connector_id).jobs_created == 2
    uids = stack.dovecot.list_uids(PASSWORD_USER)
    assert len(uids) == 1
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", str(uids[0]), "(FLAGS)")
    assert b"\\Seen" in data[0]
    # Marked unread again by hand: the ledger still prevents a second job.
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.select("INBOX")
        imap.uid("STORE", str(uids[0]), "-FLAGS.SILENT", "(\\Seen)")
    assert _run(services, connector_id).jobs_created == 0
    assert len(_jobs(services)) == 2


def test_first_activation_ignores_older_mail(services, connector_id, stack) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.append("INBOX", None, imaplib.Time2Internaldate(old), _two_files("Old backlog"))
    stack.dovecot.deliver(PASSWORD_USER, _two_files("New order"))
    _change(services, connector_id, process_mail_after=datetime.now(UTC) - timedelta(days=1))
    outcome = _run(services, connector_id)
    assert outcome.messages_seen == 1
    assert {job.source_subject for job in _jobs(services)} == {"New order"}
    assert len(stack.dovecot.list_uids(PASSWORD_USER)) == 1


def test_failing_message_is_quarantined_then_released(services, connector_id, stack) -> None:
    _change(services, connector_id, options={"max_attempts": 2})
    stack.dovecot.deliver(PASSWORD_USER, message_without_files("No files here"))
    first = _run(services, connector_id)
    assert "no attachments" in first.problems[0][4]
    second = _run(services, connector_id)
    assert "now quarantined" in second.problems[0][4]
    third = _run(services, connector_id)
    assert third.problems == []
    assert third.status == RunStatus.SUCCEEDED
    with services.db.session() as session:
        failure = session.scalars(sa.select(MessageFailure)).one()
        assert failure.attempts == 2
        assert failure.subject == "No files here"
        assert release(session, connector_id, failure.id)
        session.commit()
    fourth = _run(services, connector_id)
    assert len(fourth.problems) == 1
    assert len(stack.dovecot.list_uids(PASSWORD_USER)) == 1


def test_robot_code_rules_shape_jobs(services, connector_id, stack) -> None:
    _change(
        services,
        connector_id,
        aggregation=Aggregation.PER_EMAIL,
        rules={
            "skip_subjects": ["(?i)^out of office"],
            "exclude_files": ["*.png"],
            "job_name": "{{ subject }} ({{ files|length }} files)",
            "deadline_days": 5,
            "notes": "Use the NWP glossary.",
        },
    )
    stack.dovecot.deliver(PASSWORD_USER, _two_files("Out of office until Monday"))
    stack.dovecot.deliver(
        PASSWORD_USER,
        message_with_files(
            "Leaflet update",
            [("leaflet.pdf", PDF_BYTES, "application/pdf"), ("logo.png", b"\x89PNG", "image/png")],
        ),
    )
    outcome = _run(services, connector_id)
    assert outcome.jobs_created == 1
    assert outcome.messages_skipped == 1
    job = _jobs(services)[0]
    assert job.name == "Leaflet update (1 files)"
    assert [f.original_name for f in job.files] == ["leaflet.pdf"]
    assert job.notes == "Use the NWP glossary."
    assert job.deadline == job.source_date + timedelta(days=5)
    remaining = stack.dovecot.list_uids(PASSWORD_USER)
    assert len(remaining) == 1
    assert b"Out of office" in stack.dovecot.fetch(PASSWORD_USER, remaining[0])
    with services.db.session() as session:
        states = sorted(s.value for s in session.scalars(sa.select(ProcessedMessage.state)))
    assert states == [LedgerState.DELETED.value, LedgerState.SKIPPED.value]
    assert _run(services, connector_id).messages_skipped == 0


def test_test_connector_changes_nothing_then_finishes_once(services, connector_id, stack) -> None:
    stack.dovecot.deliver(PASSWORD_USER, _two_files("Previewed order"))
    stack.dovecot.deliver(PASSWORD_USER, message_without_files("Only a question"))
    preview = preview_connector(services.intake_context(), connector_id)
    assert preview.error is None
    assert preview.connection.startswith("Logged in to 127.0.0.1:")
    assert preview.total == 2
    assert [m.subject for m in preview.messages] == ["Previewed order", "Only a question"]
    assert preview.messages[0].files == [("a.pdf", len(PDF_BYTES)), ("b.pdf", len(PDF_BYTES))]
    assert preview.messages[0].jobs == ["a.pdf", "b.pdf"]
    assert preview.messages[1].note.startswith("No attachments")
    assert _jobs(services) == []
    uids = stack.dovecot.list_uids(PASSWORD_USER)
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.select("INBOX", readonly=True)
        _, flags = imap.uid("FETCH", ",".join(map(str, uids)), "(FLAGS)")
    assert all(b"\\Seen" not in line for line in flags)

    # Mail that arrives after the preview is not part of Finish Test.
    stack.dovecot.deliver(PASSWORD_USER, _two_files("Arrived later"))
    ctx = services.intake_context()
    selection = take_selection(ctx, connector_id, preview.token)
    assert take_selection(ctx, connector_id, preview.token) is None
    outcome = run_connector(ctx, connector_id, "test", only=selection)
    assert outcome.jobs_created == 2
    assert {job.source_subject for job in _jobs(services)} == {"Previewed order"}
    assert len(stack.dovecot.list_uids(PASSWORD_USER)) == 2


def test_preview_names_the_setting_to_fix(services, connector_id) -> None:
    _change(services, connector_id, folder="Orders")
    preview = preview_connector(services.intake_context(), connector_id)
    assert preview.error.startswith("Folder 'Orders' cannot be opened")
    assert preview.token is None


def test_recovery_is_announced(services, connector_id, stack) -> None:
    _change(services, connector_id, folder="Missing")
    assert _run(services, connector_id).status == RunStatus.FAILED
    assert _run(services, connector_id).status == RunStatus.FAILED
    _change(services, connector_id, folder="INBOX")
    assert _run(services, connector_id).status == RunStatus.SUCCEEDED
    with services.db.session() as session:
        events = list(session.scalars(sa.select(OutboxMessage.event).order_by(OutboxMessage.id)))
        runs = session.scalar(sa.select(sa.func.count()).select_from(ConnectorRun))
    assert events == ["processing_error", "connector_recovered"]
    assert runs == 3


def test_finish_test_reports_a_quarantined_message(services, connector_id, stack) -> None:
    stack.dovecot.deliver(PASSWORD_USER, _two_files("Previewed order"))
    preview = preview_connector(services.intake_context(), connector_id)
    ctx = services.intake_context()
    selection = take_selection(ctx, connector_id, preview.token)
    assert selection is not None
    # A scheduled run quarantined the message between the preview and Finish Test.
    with services.db.session() as session:
        session.add(
            MessageFailure(
                connector_id=connector_id,
                uidvalidity=selection.uidvalidity,
                uid=selection.uids[0],
                attempts=3,
                last_error="The store was full.",
                quarantined_at=datetime.now(UTC),
            )
        )
        session.commit()

    outcome = run_connector(ctx, connector_id, "test", only=selection)

    assert outcome.jobs_created == 0
    assert outcome.status == RunStatus.PARTIAL
    assert len(outcome.problems) == 1
    assert outcome.problems[0][0] == selection.uids[0]
    assert "is quarantined, so Finish Test did not process it" in outcome.problems[0][4]
    assert _jobs(services) == []
