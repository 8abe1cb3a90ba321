"""Payment and receipt rows."""

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from rideshare.db import Base, utcnow
from rideshare.rides import models as _rides  # noqa: F401  (payments.ride_id references rides.id)

PENDING, PROCESSING, SUCCEEDED, FAILED = "pending", "processing", "succeeded", "failed"
# Cancelled with its ride before it was charged: its PaymentIntent, if any, is cancelled at
# Stripe first, so nothing can confirm it once the row says so.
CANCELLED = "cancelled"
# Charged, then refunded in full at Stripe (rideshare.payments.charge.refund_payment).
REFUNDED = "refunded"


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    ride_id: Mapped[int] = mapped_column(ForeignKey("rides.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    # A Stripe PaymentMethod id (pm_...): card numbers never reach this service.
    payment_method: Mapped[str] = mapped_column(String(255))
    receipt_email: Mapped[str | None] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    job_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    attempts: Mapped[int] = mapped_column(default=0)
    # Bumped each time an operator reopens a failed payment: a fresh Stripe
    # idempotency key, since Stripe replays a cached decline for the old one.
    charge_round: Mapped[int] = mapped_column(default=0, server_default="0")
    # The fencing token of the newest job delivery that claimed this row. Tokens only
    # grow, so a late delivery (a worker frozen past its lease) finds a larger one
    # here and changes nothing.
    owner_token: Mapped[int | None] = mapped_column(BigInteger)
    # The one job that refunds this payment (an admin's, or a flow's compensation), and the
    # fencing token of its newest delivery: its own, as job tokens count per job.
    refund_job_id: Mapped[str | None] = mapped_column(String(64))
    refund_owner_token: Mapped[int | None] = mapped_column(BigInteger)
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    refund_email_job_id: Mapped[str | None] = mapped_column(String(64))
    refunded_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    receipt: Mapped["Receipt | None"] = relationship(back_populates="payment")

    @property
    def amount_minor(self) -> int:
        """The amount in the currency's minor unit, as Stripe wants it."""
        return int(self.amount * 100)

    @property
    def idempotency_key(self) -> str:
        """The Stripe idempotency key: one charge per payment round, however often it is tried."""
        return f"rideshare-payment-{self.id}-{self.charge_round}"


class Receipt(Base):
    __tablename__ = "receipts"

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    stripe_payment_intent_id: Mapped[str] = mapped_column(String(255))
    email_job_id: Mapped[str | None] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)

    payment: Mapped[Payment] = relationship(back_populates="receipt")


class IdempotencyKey(Base):
    """An Idempotency-Key a caller sent with POST /payments, and the payment it created."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the validated request body: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
