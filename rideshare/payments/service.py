"""create_payment: store a pending payment and its charge job together, then queue the charge;
cancel_payment: cancel one that was not charged; request_refund: queue the refund of one that was.

The charge itself runs in payment workers (rideshare.payments.charge), so the API
imports the Stripe SDK only to cancel a PaymentIntent (rideshare.payments.gateway).
"""

import functools
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from jobqueue import Job
from rideshare.db import get_db, utcnow
from rideshare.jobs import StagedJob, get_job, get_queue, publish_left_behind, publish_or_undo, stage_job
from rideshare.payments.models import (
    CANCELLED,
    FAILED,
    PENDING,
    PROCESSING,
    SUCCEEDED,
    IdempotencyKey,
    Payment,
)
from rideshare.payments.receipts import refund_job_id
from rideshare.payments.schemas import REFUND
from rideshare.rides.models import Ride

log = logging.getLogger("rideshare.payments")


class UnknownRide(LookupError):
    """The payment names a ride that does not exist."""


class IdempotencyConflict(ValueError):
    """An Idempotency-Key was used before with a different request."""


class IdempotencyInProgress(RuntimeError):
    """The first request with this Idempotency-Key was being undone (it answered 503) just now."""


class PaymentCharged(RuntimeError):
    """The payment was charged (or is being charged at the gateway): it cannot be cancelled."""

    def __init__(self, payment_id: int, status: str) -> None:
        super().__init__(f"payment {payment_id} is {status}")
        self.payment_id = payment_id
        self.status = status


def request_fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of a validated request body, independent of key order and number formatting."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(user_id: str, key: str, fingerprint: str) -> tuple[Payment, Job | None] | None:
    """The payment and job an earlier request with this key created, or None if there was none.

    The payment, its key and its job were committed together, so the job is in the
    outbox (its request died before publishing it: it is published now) or in the
    job store. Job None: it finished and was trimmed from the store since.
    """
    with get_db().session() as session:
        found = session.execute(
            select(IdempotencyKey.request_hash, Payment)
            .outerjoin(Payment, Payment.id == IdempotencyKey.payment_id)
            .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        ).first()
    if found is None:
        return None
    request_hash, payment = found
    if request_hash != fingerprint:
        raise IdempotencyConflict(key)
    if payment is None:
        return None
    return payment, publish_left_behind(payment.job_id) or get_job(payment.job_id)


def create_payment(
    *,
    user_id: str,
    ride_id: int,
    amount: Decimal,
    currency: str,
    payment_method: str,
    receipt_email: str | None = None,
    payer_must_be_rider: bool = True,
    idempotency: tuple[str, str] | None = None,
    **job_options: Any,
) -> tuple[Payment, Job | None]:
    """Store a pending payment with its charge job, then queue the charge; nothing is kept if queueing fails.

    The payment row, its idempotency key and its job (in the outbox) are written in
    one transaction, so a process that dies after the commit leaves a job that a
    worker's relay queues. idempotency=(key, request fingerprint): a second request
    with that key gets the first one's payment and job.
    """
    try:
        payment, staged = _store_payment(
            user_id,
            ride_id,
            amount,
            currency,
            payment_method,
            receipt_email,
            payer_must_be_rider,
            idempotency,
            job_options,
        )
    except IntegrityError:
        if idempotency is None:
            raise
        # This key was used before (or by a concurrent request, which won the insert).
        earlier = replay(user_id, *idempotency)
        if earlier is None:
            raise IdempotencyInProgress(idempotency[0]) from None
        return earlier

    def undo(session: Session) -> None:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.payment_id == payment.id))
        session.execute(delete(Payment).where(Payment.id == payment.id))

    return payment, publish_or_undo(staged, undo)


PAYMENT_COLUMNS = (
    "user_id",
    "amount",
    "currency",
    "payment_method",
    "receipt_email",
    "status",
    "job_id",
    "attempts",
    "charge_round",
    "created_at",
    "updated_at",
)


@functools.cache
def _insert_payment(payer_must_be_rider: bool) -> Any:
    """INSERT ... SELECT from the ride, built once (values are bound): no row when the ride
    does not exist, was cancelled or expired, or (for a rider; an admin may pay for any ride) is not the payer's."""
    table = Payment.__table__
    ride = select(Ride.id, *(bindparam(name, type_=table.c[name].type) for name in PAYMENT_COLUMNS)).where(
        Ride.id == bindparam("ride_id_"),
        Ride.status.not_in(("cancelled", "expired")),
    )
    if payer_must_be_rider:
        ride = ride.where(Ride.rider_id == bindparam("payer_"))
    return insert(table).from_select(["ride_id", *PAYMENT_COLUMNS], ride).returning(table.c.id)


@functools.cache
def _insert_key() -> Any:
    """The idempotency key's INSERT, built once (values are bound)."""
    return insert(IdempotencyKey.__table__)


def _store_payment(
    user_id: str,
    ride_id: int,
    amount: Decimal,
    currency: str,
    payment_method: str,
    receipt_email: str | None,
    payer_must_be_rider: bool,
    idempotency: tuple[str, str] | None,
    job_options: dict[str, Any],
) -> tuple[Payment, StagedJob]:
    """One transaction, one statement per row: the payment (only if its ride may be paid), its key, its job."""
    now = utcnow()
    values: dict[str, Any] = {
        "user_id": user_id,
        "amount": amount,
        "currency": currency.upper(),
        "payment_method": payment_method,
        "receipt_email": receipt_email,
        "status": PENDING,
        # Chosen before the insert, so the row is written whole; unique beyond this
        # database's ids, so a reset database never meets old jobs.
        "job_id": f"payment-{secrets.token_hex(8)}",
        "attempts": 0,
        "charge_round": 0,
        "created_at": now,
        "updated_at": now,
    }
    with get_db().connection() as conn:
        payment_id = conn.execute(
            _insert_payment(payer_must_be_rider), {**values, "ride_id_": ride_id, "payer_": user_id}
        ).scalar()
        if payment_id is None:
            raise UnknownRide(ride_id)
        if idempotency is not None:
            conn.execute(
                _insert_key(),
                {
                    "user_id": user_id,
                    "key": idempotency[0],
                    "request_hash": idempotency[1],
                    "payment_id": payment_id,
                    "created_at": now,
                },
            )
        # Tagged with its ride (the payment id is the data's), so a ride's jobs are found together,
        # and in its ride's group: a ride's payment jobs run one at a time, in the order added.
        job_options = {"tags": {"rideId": ride_id}, "group": f"ride:{ride_id}", **job_options}
        staged = stage_job(
            conn, "payment", {"paymentId": payment_id}, job_id=values["job_id"], owner=user_id, **job_options
        )
    payment = Payment(id=payment_id, ride_id=ride_id, **values)
    make_transient_to_detached(payment)  # reads as a loaded row, without another SELECT
    return payment, staged


# A cancel meets a delivery that is storing its intent or finishing at most once or twice.
CANCEL_ROUNDS = 5


def cancel_payment(payment_id: int, reason: str) -> str:
    """Cancel a payment that was not charged, so that nothing can charge it; returns its status.

    Stripe decides the race with a running charge: the PaymentIntent, once created, is
    cancelled at Stripe before the row is marked, and Stripe refuses to confirm a
    cancelled intent, so a confirm either came first (PaymentCharged, the row left
    alone) or never charges. The row is marked only while it still names the intent
    that was cancelled (or none): a delivery that stores an intent meanwhile makes this
    look again, and one that stores it after finds the row cancelled and cancels its
    intent itself (rideshare.payments.charge). A failed or cancelled payment is left as
    it is. Raises PaymentCharged (succeeded, or processing at the gateway) and the
    gateway's errors (nothing changed). The payment's job is cancel_payment_job's.
    """
    for _ in range(CANCEL_ROUNDS):
        with get_db().session() as session:
            payment = session.get(Payment, payment_id)
            if payment is None:
                raise LookupError(f"payment {payment_id} does not exist")
            status, intent_id = payment.status, payment.stripe_payment_intent_id
        if status == SUCCEEDED:
            raise PaymentCharged(payment_id, status)
        if status in (FAILED, CANCELLED):
            return status
        if intent_id is not None:
            from rideshare.payments import gateway  # the Stripe SDK, only when there is an intent to cancel

            at_stripe = gateway.cancel_intent(intent_id)
            if at_stripe != "canceled":
                raise PaymentCharged(payment_id, at_stripe)
            log.info("payment.intent_cancelled", extra={"payment_id": payment_id, "payment_intent": intent_id})
        same_intent = (
            Payment.stripe_payment_intent_id.is_(None)
            if intent_id is None
            else Payment.stripe_payment_intent_id == intent_id
        )
        with get_db().session() as session:
            marked = session.execute(
                update(Payment)
                .where(Payment.id == payment_id, Payment.status.in_((PENDING, PROCESSING)), same_intent)
                .values(status=CANCELLED, failure_reason=reason[:500], updated_at=utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount
        if marked:
            log.info("payment.cancelled", extra={"payment_id": payment_id})
            return CANCELLED
    raise RuntimeError(f"payment {payment_id} kept changing while it was being cancelled")


def cancel_payment_job(job_id: str | None, reason: str) -> str | None:
    """Cancel a payment's job: 'cancelled' (it never runs), 'cancelling' (it runs: its check
    points stop it), the state it finished in, or None (unknown, or the job store is away:
    the payment row, cancelled first, stops any run of it anyway)."""
    if job_id is None:
        return None
    try:
        return get_queue("payment").cancel(job_id, reason)
    except RedisError as exc:
        log.warning("payment.job_not_cancelled", extra={"job_id": job_id, "error": str(exc)})
        return None


class NotCharged(RuntimeError):
    """The payment was never charged: there is nothing to refund."""

    def __init__(self, payment_id: int, status: str) -> None:
        super().__init__(f"payment {payment_id} is {status}: it was never charged")
        self.status = status


@dataclass(frozen=True)
class RefundRequest:
    payment_id: int
    job_id: str
    created: bool  # False: the payment's refund job was there already (asked for before, or a flow's)
    job: Job | None  # None: not in the job store yet (staged), or trimmed since it ended
    payment_status: str


def request_refund(payment_id: int) -> RefundRequest:
    """Queue the refund of a charged payment, once: the payment's one refund job.

    The job id is stored on the row (refund_job_id) in the transaction that stages the
    job, so asking again, or a flow's compensation that refunds it meanwhile, finds that
    job instead of making another. Raises LookupError (no such payment), NotCharged, and
    QueueUnavailable (nothing was kept: ask again).
    """
    with get_db().session() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            raise LookupError(f"payment {payment_id} does not exist")
        job_id = refund_job_id(payment)
        # A conditional UPDATE: two requests (or a request and a compensation's claim) cannot both win.
        won = session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.status == SUCCEEDED, Payment.refund_job_id.is_(None))
            .values(refund_job_id=job_id)
            .execution_options(synchronize_session=False)
        ).rowcount
        staged = None
        if won:
            staged = stage_job(
                session,
                "payment",
                {"paymentId": payment_id, "action": REFUND},
                job_id=job_id,
                owner=payment.user_id,
                tags={"rideId": payment.ride_id},
            )
        else:
            session.refresh(payment)
            if payment.refund_job_id is None:
                raise NotCharged(payment_id, payment.status)
            job_id = payment.refund_job_id
        status = payment.status
    if staged is None:
        return RefundRequest(payment_id, job_id, False, publish_left_behind(job_id) or get_job(job_id), status)

    def undo(session: Session) -> None:
        session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.refund_job_id == job_id, Payment.refund_owner_token.is_(None))
            .values(refund_job_id=None)
        )

    return RefundRequest(payment_id, job_id, True, publish_or_undo(staged, undo), SUCCEEDED)
