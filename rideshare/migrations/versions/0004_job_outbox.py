"""job outbox: jobs staged in the transaction of the row they belong to

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_outbox",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index(op.f("ix_job_outbox_created_at"), "job_outbox", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_outbox_created_at"), table_name="job_outbox")
    op.drop_table("job_outbox")
