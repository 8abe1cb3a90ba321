"""Rides: request one, and complete it with its analytics event, written together or not at all."""

import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from jobqueue import Job
from rideshare.analytics.service import RIDE_COMPLETED
from rideshare.db import get_db, utcnow
from rideshare.jobs import publish_or_undo, stage_job
from rideshare.rides.models import Ride


class RideNotFound(LookupError):
    """No such ride, or not one this user may see."""


class NotTheDriver(ValueError):
    """The completion names a driver other than the ride's."""


class AlreadyCompleted(RuntimeError):
    """The ride was completed before (or by a concurrent request that won)."""


@dataclass(frozen=True)
class Completion:
    ride_id: int
    job_id: str
    job: Job | None


def request_ride(rider_id: str, driver_id: str, pickup: str, dropoff: str) -> Ride:
    """Store a requested ride."""
    ride = Ride(rider_id=rider_id, driver_id=driver_id, pickup=pickup, dropoff=dropoff)
    with get_db().session() as session:
        session.add(ride)
    return ride


def complete_ride(
    ride_id: int, *, user_id: str, is_admin: bool, driver_id: str, fare: Decimal, distance: float, duration: int
) -> Completion:
    """Complete a ride and queue its analytics event, in one transaction (the outbox).

    Only the ride's rider or driver (or an admin) may complete it; to anyone else it does
    not exist. If the queue refuses the event, the completion is undone and
    QueueUnavailable raised, so the client can complete the ride again.
    """
    completed_at = utcnow()
    with get_db().session() as session:
        ride = session.get(Ride, ride_id)
        if ride is None or not (is_admin or user_id in (ride.rider_id, ride.driver_id)):
            raise RideNotFound(ride_id)
        if driver_id != ride.driver_id:
            raise NotTheDriver(driver_id)
        # A conditional UPDATE, so two concurrent completions cannot both win.
        won = session.execute(
            update(Ride)
            .where(Ride.id == ride_id, Ride.status == "requested")
            .values(status="completed", fare=fare, distance_km=distance, duration_s=duration, completed_at=completed_at)
        ).rowcount
        if not won:
            raise AlreadyCompleted(ride_id)
        event_id = f"ride-completed-{ride_id}"
        event: dict[str, Any] = {
            "event": RIDE_COMPLETED,
            "eventId": event_id,
            "rideId": ride_id,
            "userId": ride.rider_id,
            "driverId": driver_id,
            "occurredAt": completed_at.isoformat(),
            "data": {"fare": str(fare), "distance": distance, "duration": duration},
        }
        # Unique beyond this database's ids; the event id is what analytics dedupes on.
        staged = stage_job(session, "analytics", event, job_id=f"{event_id}-{secrets.token_hex(4)}", owner=user_id)

    def undo(session: Session) -> None:
        session.execute(
            update(Ride)
            .where(Ride.id == ride_id)
            .values(status="requested", fare=None, distance_km=None, duration_s=None, completed_at=None)
        )

    return Completion(ride_id, staged.job_id, publish_or_undo(staged, undo))
