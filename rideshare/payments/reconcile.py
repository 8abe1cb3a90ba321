"""The payment re-check: a payment job (action reconcile, the shipped schedule payment-recheck)
that settles the payments left pending or processing for more than
PAYMENT_RECHECK_AFTER_MINUTES, by asking Stripe.

For each such payment, least recently touched first:

- its charge job is alive (waiting, delayed, grouped, active), or was left in the outbox by a
  request that died (published now): the job owns the row, which is left to it;
- otherwise no delivery of its charge job will run again, and its PaymentIntent, if any, is
  read at Stripe: ``succeeded`` makes the row succeeded with its receipt, and queues the
  receipt email, as the charge would have; ``canceled`` makes it cancelled;
  ``requires_payment_method`` (declined) failed; ``processing`` is left for the next sweep;
- never charged (no intent, or one never confirmed): if its job was cancelled (a cancel asked
  while its worker died: the gap this closes) or its ride was cancelled or expired, the payment
  is cancelled (rideshare.payments.service.cancel_payment, its intent at Stripe first);
  a settlement flow's payment, or one charged MAX_CHARGE_RUNS times already, fails; any other
  has its charge job queued again (the ended job retried, or added anew under its id once
  trimmed), which confirms the stored intent or creates it under the payment's idempotency key:
  never a second charge.

Fenced like the charge's writes (rideshare.payments.charge): each write is one conditional
UPDATE on the status, intent and owner_token this job read, so a charge delivery that claimed
the row meanwhile (an operator's retry, say) makes it change nothing; the row is that
delivery's. A rerun of this job, or two at once, settles each payment once.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import stripe
from flask import current_app
from sqlalchemy import select, update

from jobqueue import Job
from jobqueue.lifecycle import FINISHED
from rideshare.alerts import raise_alert
from rideshare.db import get_db, utcnow
from rideshare.jobs import get_job, get_queue, publish_left_behind
from rideshare.jobs.progress import log_line
from rideshare.payments import gateway
from rideshare.payments.charge import _publish_receipt_email, _stage_receipt_email
from rideshare.payments.models import CANCELLED, FAILED, PENDING, PROCESSING, SUCCEEDED, Payment, Receipt
from rideshare.payments.receipts import receipt_number
from rideshare.payments.service import PaymentCharged, cancel_payment
from rideshare.rides.models import Ride

log = logging.getLogger("rideshare.payments")

# Payments one run settles at most; the next tick takes the rest.
RECONCILE_BATCH = 100
# A payment whose charge ran this often without an outcome is failed rather than queued again.
MAX_CHARGE_RUNS = 15
RESULT_IDS = 100


@dataclass(frozen=True)
class Seen:
    """What this job read of a payment: its writes happen only while the row still says so."""

    id: int
    status: str
    intent_id: str | None
    owner_token: int | None
    job_id: str | None
    attempts: int
    user_id: str
    ride_id: int
    ride_status: str
    settles_ride: bool


def stale_payments(older_than_minutes: int, limit: int = RECONCILE_BATCH) -> list[Seen]:
    """Payments pending or processing that nothing wrote for more than older_than_minutes."""
    cutoff = utcnow() - timedelta(minutes=older_than_minutes)
    query = (
        select(
            Payment.id,
            Payment.status,
            Payment.stripe_payment_intent_id,
            Payment.owner_token,
            Payment.job_id,
            Payment.attempts,
            Payment.user_id,
            Payment.ride_id,
            Ride.status.label("ride_status"),
            (Ride.settlement_payment_id == Payment.id).label("settles_ride"),
        )
        .join(Ride, Ride.id == Payment.ride_id)
        .where(Payment.status.in_((PENDING, PROCESSING)), Payment.updated_at < cutoff)
        .order_by(Payment.updated_at)
        .limit(limit)
    )
    with get_db().session() as session:
        return [Seen(*row[:9], bool(row.settles_ride)) for row in session.execute(query)]


def _still(seen: Seen) -> Any:
    """The WHERE of a fenced write: the row as this job read it."""
    return (
        (Payment.id == seen.id)
        & (Payment.status == seen.status)
        & Payment.stripe_payment_intent_id.is_not_distinct_from(seen.intent_id)
        & Payment.owner_token.is_not_distinct_from(seen.owner_token)
    )


def _write(seen: Seen, status: str, reason: str) -> bool:
    """Move the payment to failed or cancelled if it is still as read; whether it was."""
    with get_db().session() as session:
        return bool(
            session.execute(
                update(Payment)
                .where(_still(seen))
                .values(status=status, failure_reason=reason[:500], updated_at=utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount
        )


def _record_charge(seen: Seen, intent_id: str) -> bool:
    """The intent succeeded: the payment succeeded, with its receipt and receipt email (as the charge records it)."""
    staged = None
    with get_db().session() as session:
        won = session.execute(
            update(Payment)
            .where(_still(seen))
            .values(status=SUCCEEDED, failure_reason=None, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if won:
            payment = session.get(Payment, seen.id, populate_existing=True)
            payment.receipt = Receipt(
                number=receipt_number(payment.id),
                amount=payment.amount,
                currency=payment.currency,
                stripe_payment_intent_id=intent_id,
            )
            session.flush()
            staged = _stage_receipt_email(session, payment)
    if won:
        _publish_receipt_email(seen.id, staged)
    return bool(won)


def _requeue(seen: Seen, job: Job | None) -> str:
    """Queue the payment's charge job again: its ended job retried, or added anew under its id."""
    queue = get_queue("payment")
    if job is not None:
        state = queue.retry(seen.job_id)  # type: ignore[arg-type]
        return "requeued" if state in ("waiting", "grouped") else f"left: its job is {state}"
    queue.add(
        {"paymentId": seen.id},
        job_id=seen.job_id,
        owner=seen.user_id,
        tags={"rideId": seen.ride_id},
        group=f"ride:{seen.ride_id}",
    )
    return "requeued"


def reconcile_payment(seen: Seen) -> str:
    """Settle one stale payment (see the module's docstring); what was done."""
    if seen.job_id is not None:
        if publish_left_behind(seen.job_id) is not None:
            return "queued: its job was left in the outbox"
        job = get_job(seen.job_id)
        if job is not None and job.state not in FINISHED:
            return f"left: its job is {job.state}"
    else:
        job = None
    if seen.intent_id is not None:
        try:
            intent = gateway.retrieve_intent(seen.intent_id)
        except stripe.InvalidRequestError as exc:
            # Unknown at the gateway (another account, a test gateway reset): someone has to look.
            return f"left: its intent is unknown at the gateway: {exc.user_message or exc}"[:200]
        if intent.status == "succeeded":
            return SUCCEEDED if _record_charge(seen, intent.id) else "changed meanwhile"
        if intent.status == "canceled":
            reason = f"payment intent {intent.id} was cancelled"
            return CANCELLED if _write(seen, CANCELLED, reason) else "changed meanwhile"
        if intent.status == "requires_payment_method":
            reason = "card_declined: declined (found by the payment re-check)"
            return FAILED if _write(seen, FAILED, reason) else "changed meanwhile"
        if intent.status == "processing":
            return "left: processing at the gateway"
    # Never charged.
    job_cancelled = job is not None and job.state == "cancelled"
    if job_cancelled or seen.ride_status in ("cancelled", "expired"):
        if job_cancelled:
            why = (job.cancel_reason if job is not None else None) or "its charge job was cancelled"
        else:
            why = f"ride {seen.ride_id} is {seen.ride_status}"
        try:
            return cancel_payment(seen.id, why)
        except PaymentCharged as exc:
            return f"left: {exc}"  # charged at the gateway meanwhile: the next run records it
    if seen.settles_ride or seen.attempts >= MAX_CHARGE_RUNS:
        reason = (
            "its settlement flow's charge ended without charging it"
            if seen.settles_ride
            else f"not charged after {seen.attempts} charge runs"
        )
        if not _write(seen, FAILED, reason):
            return "changed meanwhile"
        raise_alert("payment failed", payment_id=seen.id, job_id=seen.job_id, reason=reason)
        return FAILED
    return _requeue(seen, job)


def reconcile_stale_payments(job: Job) -> dict[str, Any]:
    """Settle the payments left pending or processing past PAYMENT_RECHECK_AFTER_MINUTES."""
    minutes = current_app.config["PAYMENT_RECHECK_AFTER_MINUTES"]
    outcomes: dict[str, str] = {}
    for seen in stale_payments(minutes):
        outcome = reconcile_payment(seen)
        outcomes[str(seen.id)] = outcome
        log.info("payment.rechecked", extra={"payment_id": seen.id, "outcome": outcome, "job_id": job.id})
        log_line(job, f"payment {seen.id}: {outcome}")
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        key = outcome.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return {
        "olderThanMinutes": minutes,
        "counts": counts,
        "payments": dict(list(outcomes.items())[:RESULT_IDS]),
    }
