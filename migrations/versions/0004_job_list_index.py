"""Index the job lists by kind, creation time and id

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 23:00:00
"""

from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # With the id in the index, "newest first" pages read only the rows they
    # show, even far down the list.
    op.create_index('ix_jobs_kind_created_id', 'jobs', ['kind', 'created_at', 'id'], unique=False)
    op.drop_index('ix_jobs_kind_created', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_kind_created', 'jobs', ['kind', 'created_at'], unique=False)
    op.drop_index('ix_jobs_kind_created_id', table_name='jobs')
