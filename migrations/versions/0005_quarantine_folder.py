"""Move quarantined e-mails to a folder of the connector's choice

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # All new columns allow NULL: existing connectors keep quarantined mail in
    # their folder, and existing failures were never moved.
    with op.batch_alter_table('connectors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quarantine_folder', sa.String(length=255), nullable=True))

    with op.batch_alter_table('message_failures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('moved_to_folder', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('moved_uidvalidity', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('moved_uid', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('message_failures', schema=None) as batch_op:
        batch_op.drop_column('moved_uid')
        batch_op.drop_column('moved_uidvalidity')
        batch_op.drop_column('moved_to_folder')

    with op.batch_alter_table('connectors', schema=None) as batch_op:
        batch_op.drop_column('quarantine_folder')
