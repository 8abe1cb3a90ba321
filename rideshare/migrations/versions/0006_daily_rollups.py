"""daily roll-ups: a day's ride totals recomputed from its events by a debounced job

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 05:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import rideshare.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("rides", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("distance_km", sa.Double(), nullable=False),
        sa.Column("duration_s", sa.Integer(), nullable=False),
        sa.Column("drivers", sa.Integer(), nullable=False),
        sa.Column("riders", sa.Integer(), nullable=False),
        sa.Column("computed_at", rideshare.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )
    # The roll-up reads one day of one event.
    op.create_index("ix_analytics_events_event_occurred_at", "analytics_events", ["event", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_analytics_events_event_occurred_at", table_name="analytics_events")
    op.drop_table("daily_rollups")
