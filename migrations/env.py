"""Alembic environment: the database URL comes from the caller, not from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url is not set; run migrations through migrations.upgrade")
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        # Batch mode lets ALTER TABLE work on SQLite by copying the table.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
