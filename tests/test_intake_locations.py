"""Folder, FTP and SFTP sources and stores, with a real FTP server and sshd."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from devservers.ftp_server import FtpServer
from devservers.sftp_server import SftpServer
from intake import run_connector
from intake.preview import preview_connector, take_selection
from models import (
    Aggregation,
    AuthMethod,
    Client,
    Connector,
    ConnectorStore,
    Job,
    RunStatus,
    SourceLocation,
    StoreRole,
)

from .mailhelpers import PDF_BYTES
from .servers import require
from .test_locations import SSHD, KeyPair, current_user, make_key_pair

FTP_USER, FTP_PASSWORD = "translator", "ftp-password"


@pytest.fixture
def ctx(services):  # type: ignore[no-untyped-def]
    # Files written a moment ago count as finished in these tests.
    return dataclasses.replace(services.intake_context(), location_quiet_seconds=0.2)


@pytest.fixture
def ftp_server(tmp_path) -> Iterator[FtpServer]:
    with FtpServer(tmp_path / "ftp-root", {FTP_USER: FTP_PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def client_key() -> KeyPair:
    return make_key_pair()


@pytest.fixture
def sftp_server(tmp_path, client_key: KeyPair) -> Iterator[SftpServer]:
    require(os.access(SSHD, os.X_OK), f"{SSHD} is missing (apt-get install openssh-server)")
    root = tmp_path / "sftp-root"
    root.mkdir()
    with SftpServer(root, current_user(), "unused password", client_key.public) as server:
        yield server


def _connector(services, **values) -> int:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        client = session.scalars(sa.select(Client)).first()
        values.setdefault("host", "")
        values.setdefault("username", "")
        connector = Connector(
            name=values.pop("name", "Files"),
            client=client,
            auth_method=AuthMethod.PASSWORD,
            next_run_at=datetime.now(UTC),
            **values,
        )
        session.add(connector)
        session.commit()
        return connector.id


def _settle() -> None:
    time.sleep(0.3)


def _jobs(services) -> list[tuple[str, list[str]]]:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        return [
            (job.name, [f.original_name for f in job.files])
            for job in session.scalars(sa.select(Job).order_by(Job.id))
        ]


def test_folder_source_units_become_jobs(services, seeded, ctx) -> None:
    inbox = ctx.locations_root / "inbox"
    (inbox / "Batch 7").mkdir(parents=True)
    (inbox / "Leaflet.pdf").write_bytes(PDF_BYTES)
    (inbox / "Batch 7" / "part 1.pdf").write_bytes(PDF_BYTES + b"1")
    (inbox / "Batch 7" / "part 2.pdf").write_bytes(PDF_BYTES + b"2")
    connector_id = _connector(services, source_location=SourceLocation.FOLDER, folder="inbox")
    _settle()
    outcome = run_connector(ctx, connector_id, "manual")
    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    assert sorted(_jobs(services)) == [
        ("Batch 7", ["Batch 7/part 1.pdf", "Batch 7/part 2.pdf"]),
        ("Leaflet.pdf", ["Leaflet.pdf"]),
    ]
    assert list(inbox.iterdir()) == []
    again = run_connector(ctx, connector_id, "manual")
    assert again.jobs_created == 0


def test_file_being_written_is_not_taken(services, seeded, ctx) -> None:
    inbox = ctx.locations_root / "slow"
    inbox.mkdir(parents=True)
    growing = inbox / "growing.pdf"
    growing.write_bytes(PDF_BYTES)
    connector_id = _connector(services, source_location=SourceLocation.FOLDER, folder="slow")

    def keep_writing() -> None:
        for _ in range(8):
            time.sleep(0.2)
            with open(growing, "ab") as handle:
                handle.write(b"more")

    writer = threading.Thread(target=keep_writing)
    writer.start()
    busy = dataclasses.replace(ctx, location_quiet_seconds=1.0)
    outcome = run_connector(busy, connector_id, "manual")
    writer.join()
    assert outcome.jobs_created == 0
    assert outcome.messages_skipped == 1
    assert growing.exists()
    # Once the writer is done, the next run takes it.
    _settle()
    assert run_connector(ctx, connector_id, "manual").jobs_created == 1


def test_batch_aggregation_over_ftp_with_folder_store(services, seeded, ctx, ftp_server) -> None:
    (ftp_server.root / "incoming").mkdir()
    for name in ("a.pdf", "b.pdf"):
        (ftp_server.root / "incoming" / name).write_bytes(PDF_BYTES)
    connector_id = _connector(
        services,
        source_location=SourceLocation.FTP,
        host="127.0.0.1",
        port=ftp_server.port,
        username=FTP_USER,
        password_encrypted=services.box.encrypt(FTP_PASSWORD),
        folder="incoming",
        aggregation=Aggregation.BATCH,
    )
    (ctx.locations_root / "archive").mkdir(parents=True)
    with services.db.session() as session:
        session.add(
            ConnectorStore(
                connector_id=connector_id,
                role=StoreRole.SUCCESS,
                location=SourceLocation.FOLDER,
                path="archive",
            )
        )
        session.commit()
    _settle()
    outcome = run_connector(ctx, connector_id, "manual")
    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    ((name, files),) = _jobs(services)
    assert sorted(files) == ["a.pdf", "b.pdf"]
    assert list((ftp_server.root / "incoming").iterdir()) == []
    with services.db.session() as session:
        job_id = session.scalars(sa.select(Job.id)).one()
    copies = ctx.locations_root / "archive" / f"project-{job_id}"
    assert sorted(p.name for p in copies.iterdir()) == ["a.pdf", "b.pdf"]
    assert (copies / "a.pdf").read_bytes() == PDF_BYTES


def test_sftp_store_receives_copies(services, seeded, ctx, sftp_server, client_key) -> None:
    inbox = ctx.locations_root / "to-sftp"
    inbox.mkdir(parents=True)
    (inbox / "contract.pdf").write_bytes(PDF_BYTES)
    connector_id = _connector(services, source_location=SourceLocation.FOLDER, folder="to-sftp")
    with services.db.session() as session:
        session.add(
            ConnectorStore(
                connector_id=connector_id,
                role=StoreRole.SUCCESS,
                location=SourceLocation.SFTP,
                host="127.0.0.1",
                port=sftp_server.port,
                username=current_user(),
                private_key_encrypted=services.box.encrypt(client_key.private),
                known_host_key=sftp_server.host_key_line,
                path="done",
            )
        )
        session.commit()
    (sftp_server.root / "done").mkdir()
    _settle()
    outcome = run_connector(ctx, connector_id, "manual")
    assert outcome.status == RunStatus.SUCCEEDED, outcome.problems
    copied = list((sftp_server.root / "done").rglob("*.pdf"))
    assert [p.name for p in copied] == ["contract.pdf"]
    assert copied[0].read_bytes() == PDF_BYTES


def test_unreachable_source_fails_the_run(services, seeded, ctx) -> None:
    from .servers import free_port

    connector_id = _connector(
        services,
        source_location=SourceLocation.FTP,
        host="127.0.0.1",
        port=free_port(),
        username=FTP_USER,
        password_encrypted=services.box.encrypt(FTP_PASSWORD),
        folder="incoming",
    )
    outcome = run_connector(ctx, connector_id, "manual")
    assert outcome.status == RunStatus.FAILED
    assert "127.0.0.1" in outcome.error


def test_test_connector_on_folder_then_finish_test(services, seeded, ctx) -> None:
    inbox = ctx.locations_root / "tested"
    (inbox / "Batch 9").mkdir(parents=True)
    (inbox / "Leaflet.pdf").write_bytes(PDF_BYTES)
    (inbox / "Batch 9" / "part 1.pdf").write_bytes(PDF_BYTES + b"1")
    (inbox / "empty").mkdir()
    connector_id = _connector(services, source_location=SourceLocation.FOLDER, folder="tested")
    _settle()

    preview = preview_connector(ctx, connector_id)

    assert preview.error is None
    assert preview.connection == "Listed the folder 'tested' of the file store"
    assert preview.total == 3
    described = {message.subject: message for message in preview.messages}
    assert described["Leaflet.pdf"].files == [("Leaflet.pdf", len(PDF_BYTES))]
    assert described["Leaflet.pdf"].jobs == ["Leaflet.pdf"]
    assert described["Batch 9"].files == [("Batch 9/part 1.pdf", len(PDF_BYTES) + 1)]
    assert described["empty"].files == []
    assert described["empty"].note.startswith("No file to make a job from")
    # The preview changed nothing.
    assert sorted(path.name for path in inbox.iterdir()) == ["Batch 9", "Leaflet.pdf", "empty"]
    assert _jobs(services) == []

    # A file that arrives after the preview is not part of Finish Test.
    (inbox / "Later.pdf").write_bytes(PDF_BYTES)
    _settle()
    selection = take_selection(ctx, connector_id, preview.token)
    assert selection is not None
    outcome = run_connector(ctx, connector_id, "test", only=selection)
    assert outcome.messages_seen == 3
    assert sorted(_jobs(services)) == [
        ("Batch 9", ["Batch 9/part 1.pdf"]),
        ("Leaflet.pdf", ["Leaflet.pdf"]),
    ]
    assert sorted(path.name for path in inbox.iterdir()) == ["Later.pdf", "empty"]


def test_test_connector_names_an_unreachable_ftp_server(services, seeded, ctx) -> None:
    connector_id = _connector(
        services,
        source_location=SourceLocation.FTP,
        host="127.0.0.1",
        port=9,
        username=FTP_USER,
        password_encrypted=services.box.encrypt(FTP_PASSWORD),
        folder="incoming",
    )
    preview = preview_connector(ctx, connector_id)
    assert preview.error is not None
    assert "127.0.0.1" in preview.error
    assert preview.token is None
