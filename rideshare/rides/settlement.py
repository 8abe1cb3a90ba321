"""Settling a completed ride, as a flow of jobs (jobqueue.flows): charge the fare; then, once the
charge is done, email the receipt and record the ride_paid analytics event; then mark the ride
settled. The charge's compensation is its refund: if the flow's root fails for good after the
charge completed, the payment is refunded (once) and the refund receipt emailed.

    settle-<charge id>          analytics  settle_ride: the root, marks the ride settled
    ├── receipt-<charge id>     email      the receipt           (failure: ignore)
    │   └── <charge id>         payment    the charge            (compensate: refund)
    └── ride-paid-<charge id>   analytics  ride_paid event       (failure: ignore)
        └── <charge id>         the same node: both wait on it

A receipt that cannot be delivered does not undo a ride (its failure policy is ignore: the
settle step runs and logs it). A failed charge fails both (their policy towards it is
fail_parent); the settle step then finds the payment not charged and fails, and there is
nothing to compensate.

SQL and the job store are not one transaction, and the outbox stages single jobs, not
flows. So the payment row is committed first, linked to its ride (rides.settlement_payment_id,
set once), and the flow comes second with every job id derived from the payment's: a
request that died between the two, asked again, finds the payment and adds the same flow;
one that finds the flow returns its root.
"""

import secrets
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import update

from jobqueue import Job, PermanentJobError
from jobqueue.flows import FlowJob
from jobqueue.options import InvalidJobOptions
from rideshare.db import get_db, utcnow
from rideshare.jobs import get_job
from rideshare.payments.models import PENDING, SUCCEEDED, Payment
from rideshare.payments.receipts import email_options, receipt_job_id, receipt_message
from rideshare.payments.schemas import REFUND
from rideshare.rides.models import Ride

COMPLETED = "completed"
# The analytics job that marks a ride settled (the flow's root), and the event its charge records.
SETTLE_RIDE = "settle_ride"
RIDE_PAID = "ride_paid"


class RideNotFound(LookupError):
    """No such ride, or not one this user may see."""


class NotCompleted(RuntimeError):
    """Only a completed ride (it has its fare) is settled."""

    def __init__(self, ride_id: int, status: str) -> None:
        super().__init__(f"ride {ride_id} is {status}; only a completed ride is settled")


class _LostRace(Exception):
    """A concurrent request linked its payment to the ride first."""


@dataclass(frozen=True)
class Settlement:
    ride_id: int
    payment_id: int
    job_id: str  # the flow's root
    job: Job | None  # None: it ran and was trimmed from the job store since


def settlement_job_id(payment: Payment) -> str:
    return f"settle-{payment.job_id}"


def settle(
    ride_id: int,
    *,
    user_id: str,
    is_admin: bool,
    payment_method: str,
    receipt_email: str | None = None,
    currency: str = "USD",
    **job_options: Any,
) -> Settlement:
    """Start (or find) the settlement flow of a completed ride; its rider, driver or an admin.

    The rider pays the ride's fare. A second call for the same ride returns the first's
    flow (its payment method and address stand). job_options (timeout, attempts, backoff)
    apply to every job of the flow and to the refund. Raises RideNotFound, NotCompleted, and
    QueueUnavailable (the payment row stays; asking again adds the flow).
    """
    try:
        payment = _settlement_payment(ride_id, user_id, is_admin, payment_method, receipt_email, currency)
    except _LostRace:
        payment = _settlement_payment(ride_id, user_id, is_admin, payment_method, receipt_email, currency)
    root_id = settlement_job_id(payment)
    root = get_job(root_id)
    # A payment no longer pending had its flow run (and trimmed since): adding it again would
    # send its receipt again.
    if root is None and payment.status == PENDING:
        try:
            root = _add_flow(payment, root_id, user_id, job_options)
        except InvalidJobOptions:
            root = get_job(root_id)  # a concurrent request added it
            if root is None:
                raise
    return Settlement(ride_id, payment.id, root_id, root)


def _settlement_payment(
    ride_id: int, user_id: str, is_admin: bool, payment_method: str, receipt_email: str | None, currency: str
) -> Payment:
    """The ride's settlement payment: the one stored before, else a new pending one, linked to it."""
    with get_db().session() as session:
        ride = session.get(Ride, ride_id)
        if ride is None or not (is_admin or user_id in (ride.rider_id, ride.driver_id)):
            raise RideNotFound(ride_id)
        if ride.settlement_payment_id is not None:
            payment = session.get(Payment, ride.settlement_payment_id)
            session.expunge(payment)
            return payment
        if ride.status != COMPLETED or ride.fare is None:
            raise NotCompleted(ride_id, ride.status)
        payment = Payment(
            user_id=ride.rider_id,
            ride_id=ride_id,
            amount=ride.fare,
            currency=currency.upper(),
            payment_method=payment_method,
            receipt_email=receipt_email,
            status=PENDING,
            job_id=f"payment-{secrets.token_hex(8)}",
            attempts=0,
            charge_round=0,
        )
        session.add(payment)
        session.flush()
        # A conditional UPDATE: of two concurrent requests, one links its payment, the other
        # rolls its own back and takes the winner's.
        won = session.execute(
            update(Ride)
            .where(Ride.id == ride_id, Ride.settlement_payment_id.is_(None))
            .values(settlement_payment_id=payment.id)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not won:
            raise _LostRace(ride_id)
        session.flush()
        session.expunge(payment)
    return payment


def _add_flow(payment: Payment, root_id: str, user_id: str, job_options: dict[str, Any]) -> Job:
    ride_id = payment.ride_id
    tags = {"rideId": ride_id}
    refund = {
        "queue": "payment",
        "data": {"paymentId": payment.id, "action": REFUND},
        "options": {"tags": tags, **job_options},
    }
    charge = FlowJob(
        "payment",
        {"paymentId": payment.id},
        job_id=payment.job_id,
        owner=payment.user_id,
        compensate=refund,
        # In its ride's group, as every payment job: a ride's payment jobs run one at a time.
        options={"tags": tags, "group": f"ride:{ride_id}", **job_options},
    )
    with get_db().session() as session:
        ride = session.get(Ride, ride_id)
        driver_id = ride.driver_id
    event = FlowJob(
        "analytics",
        {
            "event": RIDE_PAID,
            "eventId": f"ride-paid-{payment.job_id}",
            "rideId": ride_id,
            "userId": payment.user_id,
            "driverId": driver_id,
            "data": {"fare": str(payment.amount)},
        },
        job_id=f"ride-paid-{payment.job_id}",
        owner=payment.user_id,
        failure="ignore",
        children=["charge"],
        options=job_options,
    )
    steps: list[FlowJob | str] = [event]
    if payment.receipt_email:
        # The charge's own receipt has this id too: this step is the payment's one receipt.
        steps.insert(
            0,
            FlowJob(
                "email",
                receipt_message(payment),
                job_id=receipt_job_id(payment),
                failure="ignore",
                children=["charge"],
                owner=email_options(payment)["owner"],
                options={"tags": email_options(payment)["tags"], **job_options},
            ),
        )
    root = FlowJob(
        "analytics",
        {"event": SETTLE_RIDE, "eventId": root_id, "rideId": ride_id},
        job_id=root_id,
        owner=user_id,
        children=steps,
        nodes={"charge": charge},
        options=job_options,
    )
    return current_app.extensions["jobs"].add_flow(root)


def settle_ride(job: Job) -> dict[str, Any]:
    """The flow's root: mark the ride settled, once its payment is charged (a rerun changes nothing).

    Fails for good (PermanentJobError, and the charge is refunded by its compensation) when
    the payment is not charged or the ride is no longer completed.
    """
    ride_id = int(job.data["rideId"])
    failures = job.children_failures()
    with get_db().session() as session:
        ride = session.get(Ride, ride_id)
        if ride is None:
            raise PermanentJobError(f"ride {ride_id} does not exist")
        payment = session.get(Payment, ride.settlement_payment_id) if ride.settlement_payment_id else None
        if ride.settled_at is None:
            if payment is None or payment.status != SUCCEEDED:
                status = payment.status if payment else "missing"
                raise PermanentJobError(f"ride {ride_id} not settled: its payment is {status}")
            won = session.execute(
                update(Ride)
                .where(Ride.id == ride_id, Ride.status == COMPLETED, Ride.settled_at.is_(None))
                .values(settled_at=utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount
            if not won:
                raise PermanentJobError(f"ride {ride_id} is {ride.status}: it cannot be settled")
            session.refresh(ride)
        return {
            "rideId": ride_id,
            "paymentId": payment.id if payment else None,
            "settledAt": ride.settled_at.isoformat(),
            "stepsFailed": failures,
        }
