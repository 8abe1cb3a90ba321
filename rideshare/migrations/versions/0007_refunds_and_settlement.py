"""refunds and ride settlement: a payment's refund (its job, fencing token, Stripe refund,
receipt email) and a ride's settlement (the payment that settles it, when it was settled)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 06:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refund_job_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("refund_owner_token", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("stripe_refund_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("refund_email_job_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("refunded_at", sa.DateTime(), nullable=True))
        batch_op.create_unique_constraint("uq_payments_stripe_refund_id", ["stripe_refund_id"])

    with op.batch_alter_table("rides", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settlement_payment_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("settled_at", sa.DateTime(), nullable=True))
        batch_op.create_unique_constraint("uq_rides_settlement_payment_id", ["settlement_payment_id"])


def downgrade() -> None:
    with op.batch_alter_table("rides", schema=None) as batch_op:
        batch_op.drop_constraint("uq_rides_settlement_payment_id", type_="unique")
        batch_op.drop_column("settled_at")
        batch_op.drop_column("settlement_payment_id")

    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint("uq_payments_stripe_refund_id", type_="unique")
        batch_op.drop_column("refunded_at")
        batch_op.drop_column("refund_email_job_id")
        batch_op.drop_column("stripe_refund_id")
        batch_op.drop_column("refund_owner_token")
        batch_op.drop_column("refund_job_id")
