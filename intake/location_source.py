"""Processing a folder, FTP or SFTP source: top-level files and folders are the units.

The same ledger as for e-mail keeps the guarantees: a unit's job and its
ledger row commit together, and only then is the unit removed. The ledger
key of a unit is a hash of its name, size and modification time, so a unit
whose removal was interrupted is removed on the next run without a second
job, while a new file with the same name is a new unit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import mimetypes
from datetime import UTC, datetime
from pathlib import Path

import redis
import sqlalchemy as sa

from extraction import ExtractedFile, MessageInfo
from locations import Location, LocationError, LocationSettings, Unit, open_location
from models import Aggregation, LedgerState, ProcessedMessage
from robotcode import rules

from .context import IntakeContext
from .jobs import ConnectorSettings, PreparedMessage, commit_jobs
from .outcome import RunOutcome
from .stores import copy_jobs

# Ledger rows of location units use this UIDVALIDITY, which IMAP never sends.
LOCATION_UIDVALIDITY = 0


def unit_key(unit: Unit) -> int:
    """Return a stable 63-bit ledger key for the unit's name, size and mtime."""
    digest = hashlib.sha256(f"{unit.name}\0{unit.size}\0{unit.mtime}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def source_settings(ctx: IntakeContext, settings: ConnectorSettings) -> LocationSettings:
    return LocationSettings(
        kind=settings.source_location,
        path=settings.folder,
        host=settings.host or None,
        port=settings.port or None,
        username=settings.username or None,
        password=ctx.box.decrypt(settings.password_encrypted)
        if settings.password_encrypted
        else None,
        private_key=ctx.box.decrypt(settings.private_key_encrypted)
        if settings.private_key_encrypted
        else None,
        known_host_key=settings.known_host_key,
        ftp_tls=settings.ftp_tls,
        timeout=ctx.mail_timeout,
    )


def _extracted(path: Path, name: str) -> ExtractedFile:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return ExtractedFile(
        # Nested folder paths can exceed the column; the tail is the useful part.
        name=name[-255:],
        content_type=content_type,
        size=path.stat().st_size,
        path=path,
        sha256=digest.hexdigest(),
        origin="location",
    )


class LocationRun:
    def __init__(
        self,
        ctx: IntakeContext,
        settings: ConnectorSettings,
        run_id: int,
        outcome: RunOutcome,
        workdir: Path,
        lock: redis.lock.Lock | None,
    ) -> None:
        self.ctx = ctx
        # A folder unit is one job with all its files, like one e-mail.
        aggregation = (
            Aggregation.BATCH
            if settings.aggregation == Aggregation.BATCH
            else Aggregation.PER_EMAIL
        )
        self.settings = dataclasses.replace(settings, aggregation=aggregation)
        self.run_id = run_id
        self.outcome = outcome
        self.workdir = workdir
        self.lock = lock

    def process(self, only_keys: list[int] | None = None) -> None:
        """Process every unit, or only those of ``only_keys`` (Finish Test)."""
        with open_location(
            source_settings(self.ctx, self.settings), folder_root=self.ctx.locations_root
        ) as location:
            units = location.list_units()
            if only_keys is not None:
                selected = set(only_keys)
                units = [unit for unit in units if unit_key(unit) in selected]
            self.outcome.messages_seen = len(units)
            states = self.ledger_states([unit_key(unit) for unit in units])
            prepared: list[tuple[PreparedMessage, Unit]] = []
            for unit in units:
                key = unit_key(unit)
                if states.get(key) == LedgerState.COMMITTED:
                    self._finish(location, [(key, unit)])
                    continue
                if key in states:
                    continue
                if not location.is_stable(unit, quiet_seconds=self.ctx.location_quiet_seconds):
                    self.outcome.messages_skipped += 1
                    continue
                message = self.prepare_unit(location, unit, key)
                if message is not None:
                    prepared.append((message, unit))
                if self.lock is not None:
                    self.lock.reacquire()
            if self.settings.aggregation == Aggregation.BATCH:
                self._commit(location, prepared)
            else:
                for item in prepared:
                    self._commit(location, [item])

    def ledger_states(self, keys: list[int]) -> dict[int, LedgerState]:
        if not keys:
            return {}
        with self.ctx.db.session() as session:
            rows = session.execute(
                sa.select(ProcessedMessage.uid, ProcessedMessage.state).where(
                    ProcessedMessage.connector_id == self.settings.id,
                    ProcessedMessage.uidvalidity == LOCATION_UIDVALIDITY,
                    ProcessedMessage.uid.in_(keys),
                )
            )
            return {int(uid): state for uid, state in rows}

    def prepare_unit(self, location: Location, unit: Unit, key: int) -> PreparedMessage | None:
        target = self.workdir / f"unit-{key}"
        target.mkdir(parents=True, exist_ok=True)
        paths = location.download(unit, target)
        files = []
        for path in sorted(paths, key=lambda p: p.relative_to(target).as_posix()):
            name = path.relative_to(target).as_posix()
            if rules.file_accepted(self.settings.rules, path.name):
                files.append(_extracted(path, name))
        info = MessageInfo(
            message_id=unit.name[:998],
            sender=None,
            subject=unit.name,
            date=datetime.fromtimestamp(unit.mtime, UTC),
        )
        message = PreparedMessage(uid=key, content_hash=f"{key:016x}", info=info, files=files)
        if not files:
            self.outcome.problem(
                None, message, f"{unit.name}: no file to make a job from; it stays where it is."
            )
            return None
        return message

    def _commit(self, location: Location, items: list[tuple[PreparedMessage, Unit]]) -> None:
        if not items:
            return
        with self.ctx.db.session() as session:
            job_ids = commit_jobs(
                session,
                self.settings,
                self.run_id,
                LOCATION_UIDVALIDITY,
                [message for message, _ in items],
                self.ctx.store,
            )
        self.outcome.jobs_created += len(job_ids)
        self.outcome.created_job_ids.extend(job_ids)
        copy_error = copy_jobs(self.ctx, self.settings.id, job_ids)
        if copy_error:
            self.outcome.problem(None, None, copy_error)
        self._finish(location, [(message.uid, unit) for message, unit in items])

    def _finish(self, location: Location, done: list[tuple[int, Unit]]) -> None:
        removed = []
        for key, unit in done:
            try:
                location.remove(unit)
            except LocationError as exc:
                self.outcome.problem(None, None, f"{unit.name}: the job exists, but {exc}")
                continue
            removed.append(key)
        if not removed:
            return
        with self.ctx.db.session() as session:
            session.execute(
                sa.update(ProcessedMessage)
                .where(
                    ProcessedMessage.connector_id == self.settings.id,
                    ProcessedMessage.uidvalidity == LOCATION_UIDVALIDITY,
                    ProcessedMessage.uid.in_(removed),
                )
                .values(state=LedgerState.DELETED, deleted_at=datetime.now(UTC))
            )
            session.commit()
        self.outcome.messages_deleted += len(removed)
