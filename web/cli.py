"""``flask`` commands an operator scripts: database, users, seed, connectors, jobs."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TextIO

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import IntegrityError

import migrations
from intake import run_connector
from intake.definition import DefinitionError, apply_definition, export_connector
from models import (
    Connector,
    ConnectorStore,
    Job,
    JobKind,
    MailAccount,
    OAuthState,
    SmtpSettings,
    User,
)
from referencedata import seed as seed_reference_data
from robotcode import RobotCodeError, dump_robot_code, parse_robot_code
from runtime import Services

from .security import hash_password


def _services() -> Services:
    services: Services = current_app.extensions["mailroom"]
    return services


@click.group("db", cls=AppGroup, help="Database schema.")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Apply all Alembic migrations to DATABASE_URL.")
def db_upgrade() -> None:
    migrations.upgrade(_services().settings.database_url)
    click.echo("Database is up to date.")


@click.group("users", cls=AppGroup, help="People who log in or are responsible for connectors.")
def users_group() -> None:
    pass


@users_group.command("create", help="Create a user; prompts for the password.")
@click.argument("email")
@click.option("--name", default=None, help="Display name (default: the part before @).")
@click.option("--admin", is_flag=True, help="May change configuration.")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="MAILROOM_NEW_USER_PASSWORD",
    help="Password (at least 8 characters); read from MAILROOM_NEW_USER_PASSWORD if set.",
)
def users_create(email: str, name: str | None, admin: bool, password: str) -> None:
    email = email.strip().lower()
    if "@" not in email:
        raise click.BadParameter(f"{email!r} is not an e-mail address", param_hint="EMAIL")
    if len(password) < 8:
        raise click.BadParameter("must be at least 8 characters", param_hint="--password")
    with _services().db.session() as session:
        session.add(
            User(
                email=email,
                name=name or email.split("@")[0],
                password_hash=hash_password(password),
                is_admin=admin,
            )
        )
        try:
            session.commit()
        except IntegrityError:
            raise click.ClickException(f"a user {email} already exists") from None
    click.echo(f"Created {'admin ' if admin else ''}user {email}.")


@users_group.command("list", help="List users.")
def users_list() -> None:
    with _services().db.session() as session:
        for user in session.scalars(sa.select(User).order_by(User.email)):
            role = "admin" if user.is_admin else "user"
            login = "can log in" if user.password_hash else "no password"
            click.echo(f"{user.id}\t{user.email}\t{user.name}\t{role}\t{login}")


@click.command("seed", help="Add languages, services, specializations and sample data.")
@click.option("--no-samples", is_flag=True, help="Skip the sample clients and users.")
@with_appcontext
def seed(no_samples: bool) -> None:
    with _services().db.session() as session:
        added = seed_reference_data(session, samples=not no_samples)
    click.echo(", ".join(f"{count} {kind}" for kind, count in added.items()) + " added.")


@click.group("connectors", cls=AppGroup, help="Smart Connectors.")
def connectors_group() -> None:
    pass


@connectors_group.command("list", help="List connectors with their state.")
def connectors_list() -> None:
    with _services().db.session() as session:
        for connector in session.scalars(sa.select(Connector).order_by(Connector.id)):
            state = "active" if connector.active else "inactive"
            next_run = connector.next_run_at.isoformat() if connector.next_run_at else "-"
            click.echo(
                f"{connector.id}\t{connector.name}\t{connector.job_kind.value}\t{state}\t"
                f"{connector.username}@{connector.host}/{connector.folder}\tnext {next_run}"
            )


@connectors_group.command("run", help="Run one connector now, in this process.")
@click.argument("connector_id", type=int)
def connectors_run(connector_id: int) -> None:
    outcome = run_connector(_services().intake_context(), connector_id, "cli")
    if outcome is None:
        raise click.ClickException(
            f"connector {connector_id} does not exist or is running elsewhere right now"
        )
    click.echo(
        f"Run {outcome.run_id}: {outcome.status.value}; {outcome.messages_seen} messages, "
        f"{outcome.jobs_created} jobs, {outcome.messages_deleted} deleted."
    )
    for uid, _mid, _sender, subject, reason in outcome.problems:
        click.echo(f"  uid {uid} ({subject or 'no subject'}): {reason}")
    if outcome.error:
        click.echo(f"Error: {outcome.error}", err=True)
        sys.exit(1)


@connectors_group.command("export", help="Print a connector's definition as YAML.")
@click.argument("connector_id", type=int)
def connectors_export(connector_id: int) -> None:
    with _services().db.session() as session:
        connector = session.get(Connector, connector_id)
        if connector is None:
            raise click.ClickException(f"connector {connector_id} does not exist")
        click.echo(dump_robot_code(export_connector(connector)))


@connectors_group.command(
    "import", help="Create or update (by name) a connector from Robot Code (YAML or JSON)."
)
@click.argument("source", type=click.File("r", encoding="utf-8"))
def connectors_import(source: TextIO) -> None:
    try:
        data = parse_robot_code(source.read())
    except RobotCodeError as exc:
        raise click.ClickException(f"{source.name} is not valid Robot Code:\n{exc}") from None
    with _services().db.session() as session:
        existing = session.scalars(
            sa.select(Connector).where(Connector.name == data["name"])
        ).one_or_none()
        try:
            connector = apply_definition(session, data, existing)
        except DefinitionError as exc:
            raise click.ClickException(f"{source.name}: {exc}") from None
        if existing is None:
            connector.next_run_at = datetime.now(UTC)
            session.add(connector)
        session.commit()
        click.echo(
            f"{'Updated' if existing else 'Created'} connector {connector.id}: {connector.name}"
        )


@click.group("jobs", cls=AppGroup, help="Projects and quotes.")
def jobs_group() -> None:
    pass


@jobs_group.command("list", help="List the newest projects and quotes.")
@click.option("--kind", type=click.Choice([k.value for k in JobKind]), default=None)
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def jobs_list(kind: str | None, limit: int, as_json: bool) -> None:
    with _services().db.session() as session:
        query = sa.select(Job).order_by(Job.id.desc()).limit(limit)
        if kind:
            query = query.where(Job.kind == JobKind(kind))
        for job in session.scalars(query):
            files = [f.original_name for f in job.files]
            if as_json:
                row = {
                    "id": job.id,
                    "kind": job.kind.value,
                    "name": job.name,
                    "client": job.client.name,
                    "connector_id": job.connector_id,
                    "files": files,
                    "created_at": job.created_at.isoformat(),
                }
                click.echo(json.dumps(row, ensure_ascii=False))
            else:
                click.echo(
                    f"{job.id}\t{job.kind.value}\t{job.name}\t{job.client.name}\t"
                    f"{len(files)} files\t{job.created_at:%Y-%m-%d %H:%M}"
                )


@click.group("secrets", cls=AppGroup, help="Secrets stored encrypted in the database.")
def secrets_group() -> None:
    pass


# Every column that holds a Fernet token, by model.
ENCRYPTED_COLUMNS = {
    Connector: ("password_encrypted", "private_key_encrypted"),
    ConnectorStore: ("password_encrypted", "private_key_encrypted"),
    MailAccount: (
        "client_secret_encrypted",
        "access_token_encrypted",
        "refresh_token_encrypted",
    ),
    OAuthState: ("code_verifier_encrypted",),
    SmtpSettings: ("password_encrypted",),
}


@secrets_group.command(
    "rotate", help="Re-encrypt every stored secret with the first key of ENCRYPTION_KEYS."
)
def secrets_rotate() -> None:
    services = _services()
    count = 0
    with services.db.session() as session:
        for model, columns in ENCRYPTED_COLUMNS.items():
            for row in session.scalars(sa.select(model)):
                for column in columns:
                    value = getattr(row, column)
                    if value is not None:
                        setattr(row, column, services.box.rotate(value))
                        count += 1
        session.commit()
    click.echo(
        f"Re-encrypted {count} secrets with the first key. Keys after the first can now be "
        "removed from ENCRYPTION_KEYS."
    )


def register(app: Flask) -> None:
    for command in (db_group, users_group, seed, connectors_group, jobs_group, secrets_group):
        app.cli.add_command(command)
