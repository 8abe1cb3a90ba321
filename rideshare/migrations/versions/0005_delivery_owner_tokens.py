"""owner tokens: the job delivery that owns a payment or email delivery row

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_token", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("email_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_token", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_deliveries", schema=None) as batch_op:
        batch_op.drop_column("owner_token")

    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("owner_token")
