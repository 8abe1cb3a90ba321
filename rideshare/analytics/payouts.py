"""The nightly driver-payout summary: an analytics job (event payout_summary) that emails each
driver who completed rides on a day what they drove and earned that day, one email job per driver.

What it reads: the day's figures are the day's ride_completed events per driver
(analytics_events; driver_stats keeps each driver's running totals, not days), and the
totals to date are the driver's driver_stats row. The address is the driver_email of the
driver's latest ride that has one (given with the ride's request); a driver without one
gets no email and is counted in the result.

Which day: the job's data may name it; a shipped schedule's job names none and takes the
last whole UTC day before its tick (read from its id, sched:<id>:<tick>), so a late run of
a missed night still summarises that night's day.

Idempotent: each email's job id is derived from the day and the driver, the job store adds
an id once, and the mail worker sends a job id's message once (email_deliveries, even after
the job was trimmed from the store): a rerun of the same night, or another tick of the same
day, sends no second email.
"""

import hashlib
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from jobqueue import Job
from jobqueue.schedules import tick_of
from rideshare.analytics.models import AnalyticsEvent, DriverStats
from rideshare.analytics.service import RIDE_COMPLETED
from rideshare.db import get_db
from rideshare.jobs import add_email_job
from rideshare.rides.models import Ride

# Not an event: an analytics job that emails each driver the day's summary.
PAYOUT_SUMMARY = "payout_summary"
RESULT_IDS = 100


def payout_day(job: Job) -> date:
    """The UTC day a payout summary job summarises: its data's day, else the day before its tick's."""
    if job.data.get("day"):
        return date.fromisoformat(str(job.data["day"]))
    tick = tick_of(job.id) or job.created_at
    return datetime.fromtimestamp(tick / 1000, UTC).date() - timedelta(days=1)


def payout_email_job_id(day: date, driver_id: str) -> str:
    """The summary email's job id: one per driver and day (a driver id may be any 64 characters)."""
    digest = hashlib.sha256(driver_id.encode()).hexdigest()[:20]
    return f"payout-{day.isoformat()}-{digest}"


def _driver_rows(day: date) -> list[Any]:
    """Per driver with a ride completed on day: the day's rides, fare, distance and time, the
    driver_stats totals, and the address of their latest ride that has one."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    event = AnalyticsEvent
    daily = (
        select(
            event.driver_id.label("driver_id"),
            func.count().label("rides"),
            func.coalesce(func.sum(event.fare), Decimal("0")).label("revenue"),
            func.coalesce(func.sum(event.distance_km), 0.0).label("distance_km"),
            func.coalesce(func.sum(event.duration_s), 0).label("duration_s"),
        )
        .where(
            event.event == RIDE_COMPLETED,
            event.driver_id.is_not(None),
            event.occurred_at >= start,
            event.occurred_at < start + timedelta(days=1),
        )
        .group_by(event.driver_id)
        .subquery()
    )
    latest = (
        select(Ride.driver_id, func.max(Ride.id).label("ride_id"))
        .where(Ride.driver_email.is_not(None))
        .group_by(Ride.driver_id)
        .subquery()
    )
    address = select(Ride.driver_id, Ride.driver_email).join(latest, Ride.id == latest.c.ride_id).subquery()
    query = (
        select(
            daily,
            DriverStats.rides.label("total_rides"),
            DriverStats.revenue.label("total_revenue"),
            address.c.driver_email,
        )
        .outerjoin(DriverStats, DriverStats.driver_id == daily.c.driver_id)
        .outerjoin(address, address.c.driver_id == daily.c.driver_id)
        .order_by(daily.c.driver_id)
    )
    with get_db().session() as session:
        return list(session.execute(query).all())


def summary_message(day: date, row: Any) -> dict[str, Any]:
    """The email job's data of one driver's summary of day."""
    revenue = Decimal(row.revenue).quantize(Decimal("0.01"))
    hours = int(row.duration_s) / 3600
    lines = [
        f"Your rides on {day.isoformat()} (UTC):",
        f"  rides: {row.rides}",
        f"  fares: {revenue}",
        f"  distance: {float(row.distance_km):.1f} km",
        f"  time driving: {hours:.1f} h",
    ]
    if row.total_rides is not None:
        total = Decimal(row.total_revenue).quantize(Decimal("0.01"))
        lines.append(f"To date: {row.total_rides} rides, {total} in fares.")
    return {
        "to": row.driver_email,
        "subject": f"Your payout summary for {day.isoformat()}",
        "text": "\n".join(lines) + "\n",
    }


def send_payout_summaries(job: Job) -> dict[str, Any]:
    """Queue one summary email per driver with rides on the job's day (see the module's docstring)."""
    day = payout_day(job)
    queued: list[str] = []
    no_address: list[str] = []
    for row in _driver_rows(day):
        if not row.driver_email:
            no_address.append(row.driver_id)
            continue
        email = add_email_job(
            summary_message(day, row),
            job_id=payout_email_job_id(day, row.driver_id),
            owner=row.driver_id,
            tags={"driverId": row.driver_id, "payoutDay": day.isoformat()},
        )
        queued.append(email.id)
    # Counts, and the first ids of each (a job's result is kept in the job store).
    return {
        "day": day.isoformat(),
        "emails": len(queued),
        "emailJobIds": queued[:RESULT_IDS],
        "withoutEmail": len(no_address),
        "driversWithoutEmail": no_address[:RESULT_IDS],
    }
