"""Ride rows."""

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from rideshare.db import Base, utcnow


class Ride(Base):
    __tablename__ = "rides"

    id: Mapped[int] = mapped_column(primary_key=True)
    rider_id: Mapped[str] = mapped_column(String(64), index=True)
    driver_id: Mapped[str] = mapped_column(String(64), index=True)
    pickup: Mapped[str] = mapped_column(String(200))
    dropoff: Mapped[str] = mapped_column(String(200))
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
