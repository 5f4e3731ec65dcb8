"""Test Connector: connect, list the folder and show what a run would make.

The preview changes nothing: the folder is opened read-only (EXAMINE) and
messages are fetched with BODY.PEEK, so even \\Seen flags stay as they are.
The previewed UIDs are kept in Redis for an hour so that Finish Test
processes exactly those messages.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from extraction import ExtractionOptions, extract_files
from imapsession import MailboxError, MailboxSession
from locations import LocationError, open_location
from mailauth import TokenError
from models import Aggregation, AuthMethod, Connector, RunStatus
from robotcode import rules

from .context import IntakeContext
from .email_source import LARGE_MESSAGE_BYTES, MailboxRun, batches, spool_message
from .jobs import ConnectorSettings
from .location_source import LOCATION_UIDVALIDITY, LocationRun, source_settings, unit_key
from .outcome import RunOutcome
from .run import TestSelection, login

SELECTION_SECONDS = 3600
# A preview shows at most this many messages; Finish Test processes only those.
PREVIEW_LIMIT = 50


@dataclass
class PreviewMessage:
    uid: int
    sender: str | None
    subject: str | None
    date: datetime | None
    files: list[tuple[str, int]] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    note: str | None = None  # why the message would make no job


@dataclass
class Preview:
    connector_id: int
    connection: str = ""
    folder: str = ""
    total: int = 0
    messages: list[PreviewMessage] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)  # with batch aggregation, the one job
    error: str | None = None
    token: str | None = None  # hands the selection to Finish Test


def preview_connector(ctx: IntakeContext, connector_id: int) -> Preview:
    """Connect and describe what a run would do now, changing nothing."""
    preview = Preview(connector_id=connector_id)
    with ctx.db.session() as session:
        connector = session.get(Connector, connector_id)
        if connector is None:
            preview.error = f"Connector {connector_id} does not exist"
            return preview
        settings = ConnectorSettings.from_model(connector)
    if settings.source_location != "email":
        return _preview_location(ctx, settings, preview)
    preview.folder = settings.folder
    workdir = tempfile.mkdtemp(prefix="preview-", dir=ctx.store.work_root)
    try:
        with login(ctx, settings, readonly=True) as mailbox:
            preview.connection = (
                f"Logged in to {settings.host}:{settings.port} as {settings.username} "
                f"({'SSL' if settings.use_ssl else 'STARTTLS'}, "
                f"{'OAuth2' if settings.auth_method == AuthMethod.OAUTH2 else 'password'})"
            )
            scan = MailboxRun(
                ctx, settings, 0, mailbox, RunOutcome(0, RunStatus.RUNNING), Path(workdir), None
            )
            uids = scan.candidate_uids()
            states = scan.ledger(uids)
            waiting = [uid for uid in uids if uid not in states][:PREVIEW_LIMIT]
            preview.total = len(uids)
            options = ExtractionOptions(
                include_inline_images=bool(settings.options.get("include_inline_images")),
                unpack_zip=bool(settings.options.get("unpack_zip")),
            )
            sizes = mailbox.sizes(waiting)
            groups = batches(
                waiting,
                sizes,
                ctx.fetch_batch_size,
                ctx.fetch_batch_bytes,
                alone_bytes=LARGE_MESSAGE_BYTES,
            )
            for group in groups:
                if sizes.get(group[0], 0) > LARGE_MESSAGE_BYTES:
                    described = _describe_large(mailbox, settings, group[0], options, workdir)
                    if described is not None:
                        preview.messages.append(described)
                    continue
                for fetched in mailbox.fetch(group):
                    preview.messages.append(
                        _describe(settings, fetched.uid, fetched.raw, options, workdir)
                    )
            preview.messages.sort(key=lambda m: m.uid)
            if settings.aggregation == Aggregation.BATCH and any(m.files for m in preview.messages):
                preview.jobs = [f"{settings.name}: one job with all files"]
            preview.token = _remember(ctx, connector_id, mailbox.uidvalidity, waiting)
    except (MailboxError, TokenError) as exc:
        preview.error = str(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return preview


def _preview_location(ctx: IntakeContext, settings: ConnectorSettings, preview: Preview) -> Preview:
    """List a folder, FTP or SFTP source and what its files would make, changing nothing.

    Each top-level file or folder is one unit, shown like one e-mail: its name
    in place of the subject, its files, and the job it would make. Units are
    read into a temporary folder and left where they are.
    """
    preview.folder = settings.folder
    workdir = Path(tempfile.mkdtemp(prefix="preview-", dir=ctx.store.work_root))
    try:
        scan = LocationRun(ctx, settings, 0, RunOutcome(0, RunStatus.RUNNING), workdir, None)
        with open_location(
            source_settings(ctx, settings), folder_root=ctx.locations_root
        ) as location:
            if settings.source_location == "folder":
                preview.connection = f"Listed the folder {settings.folder!r} of the file store"
            else:
                preview.connection = (
                    f"Logged in to {settings.source_location.upper()} server "
                    f"{settings.host}:{settings.port} as {settings.username}, "
                    f"path {settings.folder!r}"
                )
            units = location.list_units()
            states = scan.ledger_states([unit_key(unit) for unit in units])
            waiting = [unit for unit in units if unit_key(unit) not in states][:PREVIEW_LIMIT]
            preview.total = len(units)
            for unit in waiting:
                key = unit_key(unit)
                described = PreviewMessage(
                    uid=key,
                    sender=None,
                    subject=unit.name,
                    date=datetime.fromtimestamp(unit.mtime, UTC),
                )
                message = scan.prepare_unit(location, unit, key)
                if message is None:
                    described.note = "No file to make a job from; it would stay where it is"
                else:
                    described.files = [(f.name, f.size) for f in message.files]
                    if settings.aggregation != Aggregation.BATCH:
                        described.jobs = [unit.name]
                preview.messages.append(described)
        if settings.aggregation == Aggregation.BATCH and any(m.files for m in preview.messages):
            preview.jobs = [f"{settings.name}: one job with all files"]
        preview.token = _remember(
            ctx, connector_id=settings.id, uidvalidity=LOCATION_UIDVALIDITY,
            uids=[unit_key(unit) for unit in waiting],
        )  # fmt: skip
    except LocationError as exc:
        preview.error = str(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return preview


def _describe_large(
    mailbox: MailboxSession,
    settings: ConnectorSettings,
    uid: int,
    options: ExtractionOptions,
    workdir: str,
) -> PreviewMessage | None:
    """Describe a large message from a temporary file, as a run reads it.

    Returns None when the message was expunged before it could be read.
    """
    with spool_message(mailbox, uid, workdir) as spooled:
        if spooled is None:
            return None
        return _describe(settings, uid, spooled.file, options, workdir)


def _describe(
    settings: ConnectorSettings,
    uid: int,
    raw: bytes | BinaryIO,
    options: ExtractionOptions,
    workdir: str,
) -> PreviewMessage:
    result = extract_files(raw, Path(workdir), options)
    info = result.info
    message = PreviewMessage(uid=uid, sender=info.sender, subject=info.subject, date=info.date)
    accepted, reason = rules.message_accepted(settings.rules, info)
    if not accepted:
        message.note = f"Skipped by a rule: {reason}"
        return message
    files = [f for f in result.files if rules.file_accepted(settings.rules, f.name)]
    message.files = [(f.name, f.size) for f in files]
    for extracted in files:
        extracted.path.unlink(missing_ok=True)
    if not files:
        message.note = "No attachments: no job; the e-mail would stay in the folder"
        return message
    if settings.aggregation == Aggregation.SEPARATELY:
        message.jobs = [name for name, _ in message.files]
    elif settings.aggregation == Aggregation.PER_EMAIL:
        message.jobs = [info.subject or message.files[0][0]]
    if result.problems:
        message.note = "Damaged parts: " + "; ".join(result.problems)
    return message


def _key(connector_id: int, token: str) -> str:
    return f"mailroom:connector-test:{connector_id}:{token}"


def _remember(ctx: IntakeContext, connector_id: int, uidvalidity: int, uids: list[int]) -> str:
    token = secrets.token_urlsafe(16)
    ctx.redis.set(
        _key(connector_id, token),
        json.dumps({"uidvalidity": uidvalidity, "uids": uids}),
        ex=SELECTION_SECONDS,
    )
    return token


def take_selection(ctx: IntakeContext, connector_id: int, token: str) -> TestSelection | None:
    """Return the previewed messages once; a second Finish Test gets None."""
    raw = ctx.redis.getdel(_key(connector_id, token))
    if raw is None:
        return None
    data = json.loads(raw)
    return TestSelection(uidvalidity=int(data["uidvalidity"]), uids=[int(u) for u in data["uids"]])
