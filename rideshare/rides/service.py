"""Rides: request one, complete it with its analytics event (written together or not at all),
or cancel it with the payments not charged yet."""

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
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
# Left requested past RIDE_EXPIRY_MINUTES: ended by the expiry sweep as a cancel would end it.
EXPIRED = "expired"

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


def request_ride(rider_id: str, driver_id: str, pickup: str, dropoff: str, *, driver_email: str | None = None) -> Ride:
    """Store a requested ride (driver_email: where its driver's payout summaries go)."""
    ride = Ride(rider_id=rider_id, driver_id=driver_id, pickup=pickup, dropoff=dropoff, driver_email=driver_email)
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
        payments = _ride_payments(session, ride_id)
        if ride.status == COMPLETED:
            raise AlreadyCompleted(ride_id)
    charged = [p for p in payments if p.status == SUCCEEDED]
    if charged:
        raise PaymentCharged(charged[0].id, SUCCEEDED)
    why = f"ride {ride_id} cancelled by {'an admin' if is_admin else 'its rider'}" + (f": {reason}" if reason else "")
    ended = _end_requested_ride(ride_id, payments, RIDE_CANCELLED, why)
    assert ended is not None  # repeat: never None
    return ended


def _ride_payments(session: Session, ride_id: int) -> Sequence[Any]:
    """A ride's payments (id, status, job id), oldest first."""
    return session.execute(
        select(Payment.id, Payment.status, Payment.job_id).where(Payment.ride_id == ride_id).order_by(Payment.id)
    ).all()


def _end_requested_ride(
    ride_id: int, payments: Sequence[Any], status: str, why: str, *, repeat: bool = True
) -> Cancellation | None:
    """Move a requested ride to status (cancelled or expired), then cancel its payments not
    charged and their jobs; a charge that wins the race at Stripe puts the ride back
    (PaymentCharged). A ride completed meanwhile raises AlreadyCompleted; one that left
    requested otherwise has its payments cancelled again (repeat: a cancel asked twice), or
    without repeat is left alone (None)."""
    with get_db().session() as session:
        # A conditional UPDATE: a completion and a cancel cannot both win.
        moved = session.execute(
            update(Ride).where(Ride.id == ride_id, Ride.status == REQUESTED).values(status=status)
        ).rowcount
        if not moved and session.get(Ride, ride_id).status == COMPLETED:
            raise AlreadyCompleted(ride_id)
    if not moved and not repeat:
        return None
    try:
        statuses = [cancel_payment(p.id, why) if p.status != FAILED else FAILED for p in payments]
    except Exception:
        if moved:  # charged at the gateway meanwhile, or the gateway is away: the ride stands
            with get_db().session() as session:
                session.execute(update(Ride).where(Ride.id == ride_id, Ride.status == status).values(status=REQUESTED))
        raise
    cancelled = [
        CancelledPayment(p.id, left, p.job_id, cancel_payment_job(p.job_id, why) if left == CANCELLED else None)
        for p, left in zip(payments, statuses, strict=True)
    ]
    return Cancellation(ride_id, status, cancelled)


def gateway_errors() -> tuple[type[Exception], ...]:
    """The Stripe SDK's errors (imported when a sweep meets one: the API never needs them here)."""
    import stripe

    return (stripe.StripeError,)


# Rides one sweep expires at most (oldest first); the next tick takes the rest.
EXPIRY_BATCH = 200


def expire_stale_rides(older_than_minutes: int, *, limit: int = EXPIRY_BATCH) -> dict[str, Any]:
    """Expire rides left requested for more than older_than_minutes, with their payments not
    charged and those payments' jobs, as a cancel would (each PaymentIntent cancelled at
    Stripe first). A ride with a payment that succeeded, or that the gateway is charging, is
    left requested. Runs again harmlessly: a ride that left requested is not touched."""
    cutoff = utcnow() - timedelta(minutes=older_than_minutes)
    charged = select(Payment.id).where(Payment.ride_id == Ride.id, Payment.status == SUCCEEDED).exists()
    with get_db().session() as session:
        stale = session.scalars(
            select(Ride.id)
            .where(Ride.status == REQUESTED, Ride.created_at < cutoff, ~charged)
            .order_by(Ride.created_at)
            .limit(limit)
        ).all()
    expired: list[int] = []
    kept: dict[str, str] = {}
    for ride_id in stale:
        with get_db().session() as session:
            payments = _ride_payments(session, ride_id)
        why = f"ride {ride_id} expired: not accepted within {older_than_minutes} minutes"
        try:
            ended = _end_requested_ride(ride_id, payments, EXPIRED, why, repeat=False)
        except (PaymentCharged, AlreadyCompleted) as exc:
            kept[str(ride_id)] = str(exc)
            continue
        except gateway_errors() as exc:
            # The gateway is away: this ride stays requested, the next sweep tries it again.
            kept[str(ride_id)] = f"{type(exc).__name__}: {exc}"[:200]
            log.warning("ride.not_expired", extra={"ride_id": ride_id, "error": str(exc)})
            continue
        if ended is None:
            continue  # cancelled or completed meanwhile
        expired.append(ride_id)
        log.info("ride.expired", extra={"ride_id": ride_id, "payments": [p.payment_id for p in ended.payments]})
    return {"expired": expired, "kept": kept, "olderThanMinutes": older_than_minutes}
