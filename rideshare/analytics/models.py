"""Analytics events and their aggregates."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from rideshare.db import Base, utcnow


class AnalyticsEvent(Base):
    __tablename__ = "analytics_events"
    # The roll-up reads one day of one event.
    __table_args__ = (Index("ix_analytics_events_event_occurred_at", "event", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The event's own id: a replayed event hits this unique key and is not counted twice.
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    ride_id: Mapped[int | None]
    user_id: Mapped[str | None] = mapped_column(String(64))
    driver_id: Mapped[str | None] = mapped_column(String(64), index=True)
    fare: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    distance_km: Mapped[float | None]
    duration_s: Mapped[int | None]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class DailyRideStats(Base):
    __tablename__ = "daily_ride_stats"

    day: Mapped[date] = mapped_column(primary_key=True)
    rides: Mapped[int] = mapped_column(default=0)
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    distance_km: Mapped[float] = mapped_column(default=0.0)
    duration_s: Mapped[int] = mapped_column(default=0)


class DriverStats(Base):
    __tablename__ = "driver_stats"

    driver_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rides: Mapped[int] = mapped_column(default=0)
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    distance_km: Mapped[float] = mapped_column(default=0.0)
    duration_s: Mapped[int] = mapped_column(default=0)
    last_ride_at: Mapped[datetime | None]


class DailyRollup(Base):
    """A day's ride totals recomputed from its ride_completed events (a debounced roll-up job)."""

    __tablename__ = "daily_rollups"

    day: Mapped[date] = mapped_column(primary_key=True)  # UTC
    rides: Mapped[int]
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    distance_km: Mapped[float]
    duration_s: Mapped[int]
    drivers: Mapped[int]  # distinct drivers with a ride that day
    riders: Mapped[int]  # distinct riders
    computed_at: Mapped[datetime]
