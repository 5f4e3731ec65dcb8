"""Copies of a connector's files after success, or after a message failed for good."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa

from locations import LocationError, LocationSettings, open_location
from mailauth import SecretBox
from models import ConnectorStore, Job, StoreRole

from .context import IntakeContext

logger = logging.getLogger(__name__)


def location_settings(row: ConnectorStore, box: SecretBox, timeout: float) -> LocationSettings:
    return LocationSettings(
        kind=row.location.value,
        path=row.path,
        host=row.host,
        port=row.port,
        username=row.username,
        password=box.decrypt(row.password_encrypted) if row.password_encrypted else None,
        private_key=box.decrypt(row.private_key_encrypted) if row.private_key_encrypted else None,
        known_host_key=row.known_host_key,
        ftp_tls=row.ftp_tls,
        timeout=timeout,
    )


def _store_row(ctx: IntakeContext, connector_id: int, role: StoreRole) -> LocationSettings | None:
    with ctx.db.session() as session:
        row = session.scalars(
            sa.select(ConnectorStore).where(
                ConnectorStore.connector_id == connector_id, ConnectorStore.role == role
            )
        ).one_or_none()
        if row is None or row.location.value == "none":
            return None
        return location_settings(row, ctx.box, ctx.mail_timeout)


def copy_jobs(ctx: IntakeContext, connector_id: int, job_ids: list[int]) -> str | None:
    """Copy the files of new jobs to the success store; return an error text or None.

    Each job gets a subfolder named after it, so files with the same name in
    different jobs never collide. A failed copy never undoes the jobs.
    """
    target = _store_row(ctx, connector_id, StoreRole.SUCCESS)
    if target is None or not job_ids:
        return None
    try:
        with (
            open_location(target, folder_root=ctx.locations_root) as location,
            ctx.db.session() as session,
        ):
            for job in session.scalars(sa.select(Job).where(Job.id.in_(job_ids))):
                folder = f"{job.kind.value}-{job.id}"
                for stored in job.files:
                    location.upload(
                        ctx.store.path(stored.storage_name), stored.original_name, folder
                    )
    except LocationError as exc:
        logger.warning("copying jobs %s to the success store failed: %s", job_ids, exc)
        return f"The jobs were created, but copying their files to the success store failed: {exc}"
    return None


def copy_failed(
    ctx: IntakeContext, connector_id: int, files: list[tuple[Path, str]], folder: str
) -> str | None:
    """Copy a failed message's files (or the e-mail itself) to the error store."""
    target = _store_row(ctx, connector_id, StoreRole.ERROR)
    if target is None or not files:
        return None
    try:
        with open_location(target, folder_root=ctx.locations_root) as location:
            for path, name in files:
                location.upload(path, name, folder)
    except LocationError as exc:
        logger.warning("copying to the error store failed: %s", exc)
        return f"Copying the files to the error store failed: {exc}"
    return None
