"""charge_payment: take a pending payment through Stripe, then write its receipt."""

import hashlib
import json
import logging
import secrets
import time
from decimal import Decimal
from typing import Any, NoReturn

import stripe
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from jobqueue import InvalidJobData, Job, PermanentJobError, QueueUnavailable, TransientJobError
from rideshare.alerts import raise_alert
from rideshare.db import get_db
from rideshare.jobs import add_email_job, add_payment_job, get_job
from rideshare.payments import gateway
from rideshare.payments.models import (
    FAILED,
    PENDING,
    PROCESSING,
    SUCCEEDED,
    IdempotencyKey,
    Payment,
    Receipt,
)
from rideshare.rides.models import Ride

log = logging.getLogger("rideshare.payments")


class UnknownRide(LookupError):
    """The payment names a ride that does not exist."""


class IdempotencyConflict(ValueError):
    """An Idempotency-Key was used before with a different request."""


class IdempotencyInProgress(RuntimeError):
    """The first request with this Idempotency-Key has not finished yet."""


# How long a repeated request waits for the first one's job to be queued.
REPLAY_WAIT_S = 5.0


def request_fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of a validated request body, independent of key order and number formatting."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(user_id: str, key: str, fingerprint: str) -> tuple[Payment, Job] | None:
    """The payment and job an earlier request with this key created, or None if there was none.

    If that request is still between storing its payment and queueing its job,
    wait for it (up to REPLAY_WAIT_S), then IdempotencyInProgress.
    """
    deadline = time.monotonic() + REPLAY_WAIT_S
    while True:
        found = _replay_once(user_id, key, fingerprint)
        if found != "pending":
            return found
        if time.monotonic() > deadline:
            raise IdempotencyInProgress(key)
        time.sleep(0.05)


def _replay_once(user_id: str, key: str, fingerprint: str) -> tuple[Payment, Job] | str | None:
    with get_db().session() as session:
        record = session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        )
        if record is None:
            return None
        if record.request_hash != fingerprint:
            raise IdempotencyConflict(key)
        payment = session.get(Payment, record.payment_id) if record.payment_id else None
    if payment is None:
        return None  # the earlier request failed (it answered 503) and left nothing
    job = get_job(payment.job_id)
    return (payment, job) if job is not None else "pending"


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
) -> tuple[Payment, Job]:
    """Store a pending payment and queue its charge; nothing is left behind if queueing fails.

    idempotency=(key, request fingerprint) records the key with the payment in
    one transaction; a second request with that key gets the first one's payment.
    """
    # Imported here: rides import nothing from payments, and payments need rides only to check.

    if idempotency is not None:
        earlier = replay(user_id, *idempotency)
        if earlier is not None:
            return earlier
    db = get_db()
    try:
        payment = _insert_payment(
            db, user_id, ride_id, amount, currency, payment_method, receipt_email, payer_must_be_rider, idempotency
        )
    except IntegrityError:
        if idempotency is None:
            raise
        # A concurrent request with the same Idempotency-Key won the insert.
        earlier = replay(user_id, *idempotency)
        if earlier is None:
            raise IdempotencyInProgress(idempotency[0]) from None
        return earlier
    # Queued only after the row is committed, so the worker always finds it.
    try:
        job = add_payment_job({"paymentId": payment.id}, job_id=payment.job_id, owner=user_id, **job_options)
    except QueueUnavailable:
        with db.session() as session:
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.payment_id == payment.id))
            session.execute(delete(Payment).where(Payment.id == payment.id))
        raise
    return payment, job


def _insert_payment(
    db: Any,
    user_id: str,
    ride_id: int,
    amount: Decimal,
    currency: str,
    payment_method: str,
    receipt_email: str | None,
    payer_must_be_rider: bool,
    idempotency: tuple[str, str] | None,
) -> Payment:
    with db.session() as session:
        ride = session.get(Ride, ride_id)
        # A rider pays for their own rides; an admin may pay for any (user_id=None skips the check).
        if ride is None or (payer_must_be_rider and ride.rider_id != user_id):
            raise UnknownRide(ride_id)
        payment = Payment(
            user_id=user_id,
            ride_id=ride_id,
            amount=amount,
            currency=currency.upper(),
            payment_method=payment_method,
            receipt_email=receipt_email,
        )
        session.add(payment)
        session.flush()
        # Unique beyond this database's ids, so a reset database never meets old jobs.
        payment.job_id = f"payment-{payment.id}-{secrets.token_hex(4)}"
        if idempotency is not None:
            session.add(
                IdempotencyKey(user_id=user_id, key=idempotency[0], request_hash=idempotency[1], payment_id=payment.id)
            )
    return payment


def _summary(payment: Payment) -> dict[str, Any]:
    receipt = payment.receipt
    return {
        "paymentId": payment.id,
        "status": payment.status,
        "paymentIntentId": payment.stripe_payment_intent_id,
        "receiptNumber": receipt.number if receipt else None,
        "receiptEmailJobId": receipt.email_job_id if receipt else None,
    }


def charge_payment(payment_id: int) -> dict[str, Any]:
    """Charge the payment once, however often this runs.

    Two steps, each recorded before the next: create the PaymentIntent
    (unconfirmed, so nothing is charged) and store its id, then confirm it.
    A rerun after a crash finds the stored intent and asks Stripe how it
    stands instead of creating another: no second charge even from a gateway
    that ignores idempotency keys. The row's state guards the rest.
    """
    db = get_db()
    with db.session() as session:
        payment = session.get(Payment, payment_id, with_for_update=True)
        if payment is None:
            raise PermanentJobError(f"payment {payment_id} does not exist")
        if payment.status == SUCCEEDED:
            return _send_receipt(payment_id)
        if payment.status == FAILED:
            raise PermanentJobError(f"payment {payment_id} already failed: {payment.failure_reason}")
        payment.status = PROCESSING
        payment.attempts += 1
        intent_id = payment.stripe_payment_intent_id
        key = payment.idempotency_key
        create_args = {
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "payment_method": payment.payment_method,
            "idempotency_key": key,
            "metadata": {
                "payment_id": str(payment.id),
                "ride_id": str(payment.ride_id),
                "charge_round": str(payment.charge_round),
            },
        }
    if intent_id is None:
        created = gateway.create_intent(**create_args)
        with db.session() as session:
            payment = session.get(Payment, payment_id, with_for_update=True)
            if payment.stripe_payment_intent_id is None:
                payment.stripe_payment_intent_id = created.id
            intent_id = payment.stripe_payment_intent_id
    intent = gateway.retrieve_intent(intent_id)
    if intent.status == "requires_confirmation":
        try:
            intent = gateway.confirm_intent(intent_id, idempotency_key=f"{key}-confirm")
        except stripe.CardError as exc:
            _decline(payment_id, exc)
        except stripe.InvalidRequestError:
            # Confirmed meanwhile by another delivery: read where it stands.
            intent = gateway.retrieve_intent(intent_id)
    if intent.status == "requires_payment_method":
        _decline(payment_id, None)
    if intent.status == "processing":
        raise TransientJobError(f"payment intent {intent.id} is still processing")
    if intent.status != "succeeded":
        reason = f"payment intent {intent.id} is {intent.status}"
        mark_failed(payment_id, reason)
        raise PermanentJobError(reason)
    with db.session() as session:
        payment = session.get(Payment, payment_id, with_for_update=True)
        if payment.status != SUCCEEDED:
            payment.status = SUCCEEDED
            payment.failure_reason = None
            session.add(
                Receipt(
                    payment_id=payment.id,
                    number=f"RCPT-{payment.id:08d}",
                    amount=payment.amount,
                    currency=payment.currency,
                    stripe_payment_intent_id=intent.id,
                )
            )
    log.info("payment.succeeded", extra={"payment_id": payment_id, "payment_intent": intent.id})
    return _send_receipt(payment_id)


def _decline(payment_id: int, exc: stripe.CardError | None) -> NoReturn:
    reason = "card_declined: " + ((exc and (exc.user_message or exc.code)) or "declined")
    mark_failed(payment_id, reason)
    raise PermanentJobError(reason) from exc


def _send_receipt(payment_id: int) -> dict[str, Any]:
    """Queue the receipt email once; a retried job re-queues it only if that never happened."""
    with get_db().session() as session:
        payment = session.get(Payment, payment_id)
        receipt = payment.receipt
        if receipt is not None and payment.receipt_email and receipt.email_job_id is None:
            job = add_email_job(
                {
                    "to": payment.receipt_email,
                    "subject": f"Your receipt {receipt.number}",
                    "text": (
                        f"Thanks for riding with us.\nReceipt {receipt.number}: "
                        f"{payment.amount} {payment.currency} for ride {payment.ride_id}."
                    ),
                    "html": (
                        f"<h1>Receipt {receipt.number}</h1><p>{payment.amount} {payment.currency}"
                        f" for ride {payment.ride_id}.</p>"
                    ),
                },
                job_id=f"receipt-{payment.job_id}",
                owner=payment.user_id,
            )
            receipt.email_job_id = job.id
        return _summary(payment)


def mark_failed(payment_id: int, reason: str) -> None:
    """Move a payment that has not succeeded to failed."""
    with get_db().session() as session:
        payment = session.get(Payment, payment_id, with_for_update=True)
        if payment is not None and payment.status in (PENDING, PROCESSING):
            payment.status = FAILED
            payment.failure_reason = reason[:500]


def reopen_for_retry(job: Job, data: dict[str, Any]) -> None:
    """Before an operator retries a failed payment job: reopen the payment, maybe with a new method."""
    if int(data["paymentId"]) != int(job.data["paymentId"]):
        raise InvalidJobData({"paymentId": ["cannot change on a retry"]})
    with get_db().session() as session:
        payment = session.get(Payment, int(data["paymentId"]), with_for_update=True)
        if payment is None or payment.status != FAILED:
            return
        payment.status = PENDING
        payment.failure_reason = None
        payment.charge_round += 1
        payment.stripe_payment_intent_id = None  # a new round, a new PaymentIntent
        if data.get("paymentMethod"):
            payment.payment_method = data["paymentMethod"]


def payment_failed_for_good(job: Job, reason: str) -> None:
    """The payment job is out of attempts: fail the payment (unless it was charged) and alert."""
    payment_id = job.data.get("paymentId")
    if payment_id is None:
        raise_alert("payment job failed", job_id=job.id, queue=job.queue, reason=reason)
        return
    mark_failed(int(payment_id), reason)
    with get_db().session() as session:
        payment = session.get(Payment, int(payment_id))
    if payment is not None and payment.status == SUCCEEDED:
        # Charged, but the bookkeeping after the charge (the receipt email) gave up.
        raise_alert("receipt not sent", job_id=job.id, queue=job.queue, payment_id=payment_id, reason=reason)
        return
    raise_alert("payment failed", job_id=job.id, queue=job.queue, payment_id=payment_id, reason=reason)
