"""Migrations, models and scheduling on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import migrations
from database import Database
from intake.schedule import claim_due_connectors
from models import (
    AuthMethod,
    Base,
    Client,
    Connector,
    Job,
    JobKind,
    MailAccount,
    ProcessedMessage,
    SourceLocation,
    TokenStatus,
)
from referencedata import seed


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schema.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db(database_url: str):  # type: ignore[no-untyped-def]
    migrations.upgrade(database_url)
    database = Database(database_url)
    yield database
    # The PostgreSQL database is shared by the session: leave it empty.
    with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    database.dispose()


def test_migrations_match_models(db: Database) -> None:
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_seed_is_idempotent(db: Database) -> None:
    with db.session() as session:
        first = seed(session)
        second = seed(session)
    assert first["languages"] > 150
    assert first["clients"] == 3
    assert set(second.values()) == {0}


def _connector(session, name: str, next_run_at: datetime) -> Connector:  # type: ignore[no-untyped-def]
    client = session.scalars(sa.select(Client)).first()
    connector = Connector(
        name=name, client=client, host="127.0.0.1", username="a@example.com",
        auth_method=AuthMethod.PASSWORD,
        interval_minutes=5, next_run_at=next_run_at,
    )  # fmt: skip
    session.add(connector)
    session.commit()
    return connector


def test_claim_due_connectors_once(db: Database) -> None:
    now = datetime.now(UTC)
    with db.session() as session:
        seed(session)
        due = _connector(session, "due", now - timedelta(seconds=1))
        _connector(session, "later", now + timedelta(minutes=1))
        inactive = _connector(session, "inactive", now - timedelta(minutes=1))
        inactive.active = False
        session.commit()
        due_id = due.id
    with db.session() as first, db.session() as second:
        assert claim_due_connectors(first, now) == [due_id]
        assert claim_due_connectors(second, now) == []
    with db.session() as session:
        next_run = session.get(Connector, due_id).next_run_at
        assert next_run == now + timedelta(minutes=5)


def test_claim_waits_for_consent_on_email_only(db: Database) -> None:
    now = datetime.now(UTC)
    with db.session() as session:
        seed(session)
        mailbox = _connector(session, "mailbox", now - timedelta(seconds=1))
        folder = _connector(session, "folder", now - timedelta(seconds=1))
        # Robot Code without "authorization" leaves OAuth2 set on any source.
        for connector in (mailbox, folder):
            connector.auth_method = AuthMethod.OAUTH2
        folder.source_location = SourceLocation.FOLDER
        session.commit()
        folder_id = folder.id
        assert mailbox.waits_for_consent
        assert not folder.waits_for_consent
    with db.session() as session:
        assert claim_due_connectors(session, now) == [folder_id]


def test_claim_is_compare_and_set(db: Database) -> None:
    """A tick that read the old due time cannot claim after another tick did."""
    now = datetime.now(UTC)
    with db.session() as session:
        seed(session)
        connector = _connector(session, "race", now - timedelta(seconds=5))
        connector_id, seen_due = connector.id, connector.next_run_at
    with db.session() as session:
        assert claim_due_connectors(session, now) == [connector_id]
    with db.session() as session:
        stale = session.execute(
            sa.update(Connector)
            .where(Connector.id == connector_id, Connector.next_run_at == seen_due)
            .values(next_run_at=now)
        )
        assert stale.rowcount == 0


def test_ledger_rejects_same_uid_twice(db: Database) -> None:
    with db.session() as session:
        seed(session)
        connector = _connector(session, "ledger", datetime.now(UTC))
        for _ in range(2):
            session.add(
                ProcessedMessage(
                    connector_id=connector.id, uidvalidity=7, uid=1, content_hash="0" * 64
                )
            )
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()


def test_timestamps_come_back_aware(db: Database) -> None:
    with db.session() as session:
        seed(session)
        client = session.scalars(sa.select(Client)).first()
        session.add(Job(kind=JobKind.QUOTE, name="q", client=client))
        session.commit()
    with db.session() as session:
        job = session.scalars(sa.select(Job)).one()
        assert job.created_at.tzinfo is not None
        assert job.kind is JobKind.QUOTE


def test_claim_waits_for_first_consent(db: Database) -> None:
    now = datetime.now(UTC)
    with db.session() as session:
        seed(session)
        connector = _connector(session, "oauth", now - timedelta(seconds=1))
        account = MailAccount(provider="google", email="a@example.com")
        connector.mail_account = account
        connector.auth_method = AuthMethod.OAUTH2
        session.commit()
        connector_id = connector.id
        assert claim_due_connectors(session, now) == []
        account.token_status = TokenStatus.ACTIVE
        session.commit()
        assert claim_due_connectors(session, now) == [connector_id]


def test_weekly_schedule_sets_next_run(db: Database) -> None:
    # Friday 2026-12-04 18:00 UTC is 19:00 in Prague; the next slot is Monday 08:00.
    now = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    with db.session() as session:
        seed(session)
        connector = _connector(session, "weekly", now - timedelta(seconds=1))
        connector.weekly_schedule = {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "times": ["08:00"],
            "timezone": "Europe/Prague",
        }
        session.commit()
        connector_id = connector.id
        assert claim_due_connectors(session, now) == [connector_id]
        session.refresh(connector)
        assert connector.next_run_at == datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
