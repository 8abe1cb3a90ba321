"""Rides: request one, complete it with its analytics event (written together or not at all),
or cancel it with the payments not charged yet."""

import logging
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobqueue import Job
from rideshare.analytics.service import RIDE_COMPLETED, stage_daily_rollup
from rideshare.db import get_db, utcnow
from rideshare.jobs import QueueUnavailable, publish_job, publish_or_undo, stage_job, withdraw_job
from rideshare.payments.models import CANCELLED, FAILED, SUCCEEDED, Payment
from rideshare.payments.service import PaymentCharged, cancel_payment, cancel_payment_job
from rideshare.rides.models import Ride

REQUESTED, COMPLETED, RIDE_CANCELLED = "requested", "completed", "cancelled"

log = logging.getLogger("rideshare.rides")


class RideNotFound(LookupError):
    """No such ride, or not one this user may see."""


class NotTheDriver(ValueError):
    """The completion names a driver other than the ride's."""


class AlreadyCompleted(RuntimeError):
    """The ride was completed before (or by a concurrent request that won)."""


class NotTheRider(PermissionError):
    """Someone who may see the ride (its driver) but not cancel it."""


@dataclass(frozen=True)
class CancelledPayment:
    payment_id: int
    status: str  # the payment's: cancelled, or failed (left as it was)
    job_id: str | None
    job_state: str | None  # what cancelling its job answered: cancelled, cancelling, a finished state


@dataclass(frozen=True)
class Cancellation:
    ride_id: int
    status: str
    payments: list[CancelledPayment]


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
    """Complete a ride and queue its analytics event and its day's roll-up, in one transaction (the outbox).

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
        # In the ride's group: a ride's analytics jobs run one at a time, in the order added.
        staged = stage_job(
            session,
            "analytics",
            event,
            job_id=f"{event_id}-{secrets.token_hex(4)}",
            owner=user_id,
            group=f"ride:{ride_id}",
        )
        # The day's totals, recomputed once the burst of completions it is part of is over.
        rollup = stage_daily_rollup(session, completed_at.date(), event_id, owner=user_id)

    def undo(session: Session) -> None:
        withdraw_job(session, rollup.job_id)
        session.execute(
            update(Ride)
            .where(Ride.id == ride_id)
            .values(status="requested", fare=None, distance_km=None, duration_s=None, completed_at=None)
        )

    job = publish_or_undo(staged, undo)
    try:
        publish_job(rollup)  # most often another completion's roll-up of the day takes it in
    except QueueUnavailable as exc:
        # Committed with the ride: a worker's outbox relay queues it once Redis answers.
        log.warning("ride.rollup_staged", extra={"ride_id": ride_id, "error": str(exc)})
    return Completion(ride_id, staged.job_id, job)


def cancel_ride(ride_id: int, *, user_id: str, is_admin: bool, reason: str | None = None) -> Cancellation:
    """Cancel a ride that was not completed, with its payments and their jobs, unless one was charged.

    Only the ride's rider (or an admin) may cancel it; its driver gets NotTheRider, anyone
    else RideNotFound. A ride with a payment that succeeded (or that the gateway is
    charging) is left as it is: PaymentCharged. Otherwise the ride is marked cancelled
    (which refuses new payments for it), then each payment not charged is cancelled, its
    PaymentIntent at Stripe first (cancel_payment), and then its job: a waiting or delayed
    one never runs, a running one stops at its next check point. A charge that wins the
    race at Stripe puts the ride back and raises PaymentCharged. Cancelling again repeats
    nothing that was done and answers the same.
    """
    with get_db().session() as session:
        ride = session.get(Ride, ride_id)
        if ride is None or not (is_admin or user_id in (ride.rider_id, ride.driver_id)):
            raise RideNotFound(ride_id)
        if not (is_admin or user_id == ride.rider_id):
            raise NotTheRider(ride_id)
        payments = session.execute(
            select(Payment.id, Payment.status, Payment.job_id).where(Payment.ride_id == ride_id).order_by(Payment.id)
        ).all()
        if ride.status == COMPLETED:
            raise AlreadyCompleted(ride_id)
    charged = [p for p in payments if p.status == SUCCEEDED]
    if charged:
        raise PaymentCharged(charged[0].id, SUCCEEDED)
    why = f"ride {ride_id} cancelled by {'an admin' if is_admin else 'its rider'}" + (f": {reason}" if reason else "")
    with get_db().session() as session:
        # A conditional UPDATE: a completion and a cancel cannot both win.
        moved = session.execute(
            update(Ride).where(Ride.id == ride_id, Ride.status == REQUESTED).values(status=RIDE_CANCELLED)
        ).rowcount
        if not moved and session.get(Ride, ride_id).status == COMPLETED:
            raise AlreadyCompleted(ride_id)
    try:
        statuses = [cancel_payment(p.id, why) if p.status != FAILED else FAILED for p in payments]
    except Exception:
        if moved:  # charged at the gateway meanwhile, or the gateway is away: the ride stands
            with get_db().session() as session:
                session.execute(
                    update(Ride).where(Ride.id == ride_id, Ride.status == RIDE_CANCELLED).values(status=REQUESTED)
                )
        raise
    cancelled = [
        CancelledPayment(p.id, status, p.job_id, cancel_payment_job(p.job_id, why) if status == CANCELLED else None)
        for p, status in zip(payments, statuses, strict=True)
    ]
    return Cancellation(ride_id, RIDE_CANCELLED, cancelled)
