"""driver email on rides (where a driver's payout summary goes) and an index for the ride
expiry sweep (requested rides by age)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 06:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rides", schema=None) as batch_op:
        batch_op.add_column(sa.Column("driver_email", sa.String(length=254), nullable=True))
        batch_op.create_index("ix_rides_status_created_at", ["status", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("rides", schema=None) as batch_op:
        batch_op.drop_index("ix_rides_status_created_at")
        batch_op.drop_column("driver_email")
