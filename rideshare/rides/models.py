"""Ride rows."""

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from rideshare.db import Base, utcnow


class Ride(Base):
    __tablename__ = "rides"
    # The expiry sweep reads requested rides by age.
    __table_args__ = (Index("ix_rides_status_created_at", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rider_id: Mapped[str] = mapped_column(String(64), index=True)
    driver_id: Mapped[str] = mapped_column(String(64), index=True)
    # Where the driver's payout summaries go (rideshare.analytics.payouts), as given with the
    # ride's request: the latest ride's address of a driver is the one used.
    driver_email: Mapped[str | None] = mapped_column(String(254))
    pickup: Mapped[str] = mapped_column(String(200))
    dropoff: Mapped[str] = mapped_column(String(200))
    # requested, completed, cancelled (by its rider or an admin) or expired (left requested
    # past RIDE_EXPIRY_MINUTES: rideshare.rides.service.expire_stale_rides).
    status: Mapped[str] = mapped_column(String(16), default="requested")
    fare: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    distance_km: Mapped[float | None]
    duration_s: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    # The payment its settlement flow charges (rideshare.rides.settlement), set once; a plain
    # id, not a foreign key: payments.ride_id points here already, and a cycle of keys would
    # need deferred constraints for nothing.
    settlement_payment_id: Mapped[int | None] = mapped_column(unique=True)
    settled_at: Mapped[datetime | None]
