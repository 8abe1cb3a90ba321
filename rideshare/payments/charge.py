"""The worker side of payments: charge_payment and refund_payment through Stripe, the receipts,
and the final-failure hooks.

Only payment workers import this module (and with it the Stripe SDK); the API
queues charges through rideshare.payments.service.

Every write a job delivery makes to a payment row is fenced by the delivery's
token: the delivery claims the row first (payments.owner_token), and each later
write happens only while the row still names that token. A worker frozen past its
lease, whose job another delivery took over, changes nothing when it wakes.

A payment cancelled with its ride (rideshare.payments.service.cancel_payment) is never
charged: the canceller cancels its PaymentIntent at Stripe before it marks the row, and
Stripe refuses to confirm a cancelled intent; an intent created while the row was being
cancelled is found by the delivery that stores it, which cancels it. The job is told each
step (its progress and log) and stops at check points before each call that could charge.
"""

import logging
from typing import Any, NoReturn

import stripe
from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from jobqueue import (
    InvalidJobData,
    Job,
    JobCancelled,
    JobOptions,
    PermanentJobError,
    QueueUnavailable,
    Snooze,
    StaleDelivery,
    TransientJobError,
)
from rideshare.alerts import raise_alert
from rideshare.db import get_db, utcnow
from rideshare.jobs import StagedJob, publish_job, stage_job
from rideshare.jobs.progress import log_line, report_step, stop_if_cancelled
from rideshare.payments import gateway
from rideshare.payments.models import CANCELLED, FAILED, PENDING, PROCESSING, REFUNDED, SUCCEEDED, Payment, Receipt
from rideshare.payments.receipts import (
    email_options,
    receipt_job_id,
    receipt_message,
    refund_message,
    refund_receipt_job_id,
)
from rideshare.payments.schemas import REFUND

log = logging.getLogger("rideshare.payments")

# A PaymentIntent still processing at the gateway is looked at again after the job's
# backoff wait for as many tries as it has snoozed (this long without a backoff delay),
# at most MAX_PROCESSING_POLL_S apart; the queue's max_snoozes bounds how long in all.
PROCESSING_POLL_S = 5.0
MAX_PROCESSING_POLL_S = 900.0


def _summary(payment: Payment) -> dict[str, Any]:
    receipt = payment.receipt
    return {
        "paymentId": payment.id,
        "status": payment.status,
        "paymentIntentId": payment.stripe_payment_intent_id,
        "receiptNumber": receipt.number if receipt else None,
        "receiptEmailJobId": receipt.email_job_id if receipt else None,
    }


def _hold(session: Session, payment_id: int, token: int, *, claim: bool = False) -> Payment:
    """Lock the payment row for the delivery with token and return it; StaleDelivery if a newer one claimed it.

    claim: take the row unless a newer delivery holds it (a delivery's first step,
    and the final-failure hook); otherwise the row must still name this token.
    The test is the UPDATE's WHERE, not a read then a write: SQLite ignores FOR
    UPDATE, and the UPDATE holds the row (PostgreSQL) or the database (SQLite)
    until this transaction ends, so the caller's writes land under the same test.
    Keep what follows it short, and off the network.
    """
    owner = Payment.owner_token
    mine = or_(owner.is_(None), owner <= token) if claim else owner == token
    held = session.execute(
        update(Payment)
        .where(Payment.id == payment_id, mine)
        .values(owner_token=token)
        .execution_options(synchronize_session=False)
    )
    payment = session.get(Payment, payment_id, populate_existing=True)
    if payment is None:
        raise PermanentJobError(f"payment {payment_id} does not exist")
    if held.rowcount == 0:
        raise StaleDelivery(
            f"payment {payment_id}: delivery {token} is stale, delivery {payment.owner_token} owns the payment"
        )
    return payment


def charge_payment(payment_id: int, *, token: int, job: Job | None = None) -> dict[str, Any]:
    """Charge the payment once, however often this runs; token is the job delivery's fencing token.

    Two steps, each recorded before the next: create the PaymentIntent
    (unconfirmed, so nothing is charged) and store its id, then confirm it.
    A rerun after a crash finds the stored intent and asks Stripe how it
    stands instead of creating another: no second charge even from a gateway
    that ignores idempotency keys. The row's state guards the rest, and its
    owner token refuses every write of a delivery that a newer one replaced
    (StaleDelivery, with the row left as the newer delivery wrote it).

    job: the delivery's job, told each step and asked at check points whether it was
    cancelled (JobCancelled); None outside a job. An intent still processing at the
    gateway snoozes the job (Snooze) without spending an attempt; the next run reads
    the same intent again.
    """
    db = get_db()
    staged = None
    with db.session() as session:
        payment = _hold(session, payment_id, token, claim=True)
        if payment.status == FAILED:
            raise PermanentJobError(f"payment {payment_id} already failed: {payment.failure_reason}")
        if payment.status == CANCELLED:
            log_line(job, f"payment {payment_id} was cancelled; nothing was charged")
            raise JobCancelled(payment.failure_reason or f"payment {payment_id} was cancelled")
        charged = payment.status == SUCCEEDED
        if charged:
            # Charged before (a rerun): only the receipt email may be left to queue.
            staged = _stage_receipt_email(session, payment)
            summary = _summary(payment)
        else:
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
    if charged:
        _publish_receipt_email(payment_id, staged)
        return summary
    if intent_id is None:
        stop_if_cancelled(job)
        report_step(job, "creating payment intent")
        created = gateway.create_intent(**create_args)
        with db.session() as session:
            payment = _hold(session, payment_id, token)
            if payment.stripe_payment_intent_id is None:
                payment.stripe_payment_intent_id = created.id
            intent_id = payment.stripe_payment_intent_id
            cancelled = payment.status == CANCELLED
        if cancelled:
            # Cancelled while the intent was being created, by someone who could not see it yet.
            _cancel_unconfirmed(job, intent_id)
            raise JobCancelled(f"payment {payment_id} was cancelled")
        log_line(job, f"payment intent {intent_id} created")
    intent = gateway.retrieve_intent(intent_id)
    if intent.status == "requires_confirmation":
        stop_if_cancelled(job)
        _require_open(payment_id, token)
        report_step(job, "confirming", paymentIntentId=intent_id)
        # A 429 here (stripe.RateLimitError) pauses the queue and requeues the job
        # (PAYMENT_QUEUE.back_pressure): Stripe ran nothing, so the rerun reads this intent
        # still requires_confirmation and confirms it with the same key; had a gateway run
        # it anyway, the rerun reads it succeeded and confirms nothing.
        try:
            intent = gateway.confirm_intent(intent_id, idempotency_key=f"{key}-confirm")
        except stripe.CardError as exc:
            _decline(payment_id, token, exc, job)
        except stripe.InvalidRequestError:
            # Confirmed meanwhile by another delivery, or cancelled with its ride: read where it stands.
            intent = gateway.retrieve_intent(intent_id)
    if intent.status == "canceled":
        reason = f"payment intent {intent.id} was cancelled"
        _mark_cancelled(payment_id, reason, token=token)
        log_line(job, f"{reason}; nothing was charged")
        raise JobCancelled(reason)
    if intent.status == "requires_payment_method":
        _decline(payment_id, token, None, job)
    if intent.status == "processing":
        raise _poll_later(job, intent.id)
    if intent.status != "succeeded":
        reason = f"payment intent {intent.id} is {intent.status}"
        mark_failed(payment_id, reason, token=token)
        log_line(job, reason)
        raise PermanentJobError(reason)
    # Charged: no check point from here on. A cancel that comes now is refused by Stripe
    # (its ride cancel answers 409), and the charge must be recorded and receipted.
    with db.session() as session:
        payment = _hold(session, payment_id, token)
        if payment.status != SUCCEEDED:
            payment.status = SUCCEEDED
            payment.failure_reason = None
            payment.receipt = Receipt(
                number=f"RCPT-{payment.id:08d}",
                amount=payment.amount,
                currency=payment.currency,
                stripe_payment_intent_id=intent.id,
            )
        staged = _stage_receipt_email(session, payment)
        summary = _summary(payment)
    log.info("payment.succeeded", extra={"payment_id": payment_id, "payment_intent": intent.id})
    report_step(job, "charged", paymentIntentId=intent.id, receiptNumber=summary["receiptNumber"])
    log_line(job, f"charged: payment intent {intent.id} succeeded, receipt {summary['receiptNumber']}")
    _publish_receipt_email(payment_id, staged)
    return summary


def _require_open(payment_id: int, token: int) -> None:
    """A check point on the row before confirming: JobCancelled if the payment was cancelled."""
    with get_db().session() as session:
        payment = _hold(session, payment_id, token)
        if payment.status == CANCELLED:
            raise JobCancelled(payment.failure_reason or f"payment {payment_id} was cancelled")


def _cancel_unconfirmed(job: Job | None, intent_id: str) -> None:
    """Cancel at Stripe an intent this delivery created for a payment cancelled meanwhile."""
    try:
        status = gateway.cancel_intent(intent_id)
    except gateway.TRANSIENT_ERRORS as exc:
        # Never confirmed, so nothing is charged; left requires_confirmation until it expires.
        log.warning("payment.intent_not_cancelled", extra={"payment_intent": intent_id, "error": str(exc)})
        return
    log_line(job, f"payment intent {intent_id} created as the payment was cancelled: {status}")


def _poll_later(job: Job | None, intent_id: str) -> Exception:
    """Snooze the job while its intent is processing (outside a job: a transient error, as before)."""
    reason = f"payment intent {intent_id} is still processing"
    if job is None:
        return TransientJobError(reason)
    wait_ms = JobOptions.from_dict(job.opts).backoff.wait_ms(job.snoozes + 1)
    seconds = min(wait_ms / 1000 or PROCESSING_POLL_S, MAX_PROCESSING_POLL_S)
    report_step(job, "waiting for the gateway", paymentIntentId=intent_id, intentStatus="processing")
    log_line(job, f"{reason}; looking again in {seconds:g} s")
    return Snooze(seconds, reason)


def _decline(payment_id: int, token: int, exc: stripe.CardError | None, job: Job | None = None) -> NoReturn:
    reason = "card_declined: " + ((exc and (exc.user_message or exc.code)) or "declined")
    mark_failed(payment_id, reason, token=token)
    code = (exc and exc.code) or "declined"
    report_step(job, "declined", declineCode=code)
    log_line(job, f"declined by the gateway: {code}")
    raise PermanentJobError(reason) from exc


def _mark_cancelled(payment_id: int, reason: str, *, token: int) -> None:
    """Mark a payment whose intent was found cancelled at Stripe as cancelled, as the delivery with token."""
    with get_db().session() as session:
        payment = _hold(session, payment_id, token)
        if payment.status in (PENDING, PROCESSING):
            payment.status = CANCELLED
            payment.failure_reason = reason[:500]


def _stage_receipt_email(session: Session, payment: Payment) -> StagedJob | None:
    """Stage the receipt email in the transaction that holds the payment, unless it was queued before."""
    receipt = payment.receipt
    if receipt is None or not payment.receipt_email or receipt.email_job_id is not None:
        return None
    # A ride settlement flow stored this job (same id) as its receipt step: adding it again adds nothing.
    staged = stage_job(
        session, "email", receipt_message(payment), job_id=receipt_job_id(payment), **email_options(payment)
    )
    receipt.email_job_id = staged.job_id
    return staged


def _publish_receipt_email(payment_id: int, staged: StagedJob | None) -> None:
    """Queue an email staged with the payment's last write (after its commit, off the row's lock)."""
    if staged is None:
        return
    try:
        publish_job(staged)
    except QueueUnavailable as exc:
        # Committed with the payment: a worker's outbox relay queues it once Redis answers.
        log.warning("payment.receipt_email_staged", extra={"payment_id": payment_id, "error": str(exc)})


class RefundedElsewhere(Exception):
    """Another job is the payment's refund job: this one leaves the refund to it."""

    def __init__(self, payment_id: int, job_id: str) -> None:
        super().__init__(f"payment {payment_id} is refunded by job {job_id}")
        self.job_id = job_id


def _hold_refund(session: Session, payment_id: int, job_id: str, token: int, *, claim: bool = False) -> Payment:
    """Lock the payment row for this refund delivery and return it, as _hold does for a charge.

    One job refunds a payment: claim takes the row for job_id when no other refund job
    has it (an admin's refund stores its job id when it is asked for) and the payment
    was charged. The fence is the pair (refund_job_id, refund_owner_token), since a job's
    tokens count per job and the charge's are another job's. Raises RefundedElsewhere,
    StaleDelivery, or PermanentJobError (no such payment, or never charged).
    """
    if claim:
        mine = (Payment.status.in_((SUCCEEDED, REFUNDED))) & (
            Payment.refund_job_id.is_(None)
            | (
                (Payment.refund_job_id == job_id)
                & or_(Payment.refund_owner_token.is_(None), Payment.refund_owner_token <= token)
            )
        )
    else:
        mine = (Payment.refund_job_id == job_id) & (Payment.refund_owner_token == token)
    held = session.execute(
        update(Payment)
        .where(Payment.id == payment_id, mine)
        .values(refund_job_id=job_id, refund_owner_token=token)
        .execution_options(synchronize_session=False)
    )
    payment = session.get(Payment, payment_id, populate_existing=True)
    if payment is None:
        raise PermanentJobError(f"payment {payment_id} does not exist")
    if held.rowcount == 0:
        if payment.refund_job_id not in (None, job_id):
            raise RefundedElsewhere(payment_id, payment.refund_job_id)
        if payment.status not in (SUCCEEDED, REFUNDED):
            raise PermanentJobError(f"payment {payment_id} is {payment.status}: never charged, nothing to refund")
        raise StaleDelivery(
            f"payment {payment_id}: refund delivery {token} is stale, delivery {payment.refund_owner_token} owns it"
        )
    return payment


def _refund_summary(payment: Payment) -> dict[str, Any]:
    return {
        "paymentId": payment.id,
        "status": payment.status,
        "refundId": payment.stripe_refund_id,
        "refundJobId": payment.refund_job_id,
        "refundEmailJobId": payment.refund_email_job_id,
    }


def refund_payment(payment_id: int, *, job_id: str, token: int, job: Job | None = None) -> dict[str, Any]:
    """Refund a charged payment in full once, however often this runs (succeeded -> refunded).

    job_id and token: the refund job and its delivery's fencing token (_hold_refund). Stripe
    is asked first for a refund of the payment's PaymentIntent that an earlier delivery made
    and never recorded (killed while Stripe answered); only without one is a refund created,
    with the idempotency key refund-<payment id>. So a rerun makes no second refund, even at a
    gateway that ignores idempotency keys (localstripe does). The refund receipt email is
    staged with the row's write (the outbox) and published after the commit, once.
    """
    db = get_db()
    try:
        with db.session() as session:
            payment = _hold_refund(session, payment_id, job_id, token, claim=True)
            refunded = payment.status == REFUNDED
            if refunded:
                # Refunded before (a rerun): only the refund receipt may be left to queue.
                staged = _stage_refund_email(session, payment)
                summary = _refund_summary(payment)
            intent_id = payment.stripe_payment_intent_id
    except RefundedElsewhere as exc:
        log_line(job, str(exc))
        return {"paymentId": payment_id, "status": "refunded elsewhere", "refundJobId": exc.job_id}
    if refunded:
        _publish_receipt_email(payment_id, staged)
        return summary
    stop_if_cancelled(job)
    report_step(job, "refunding", paymentIntentId=intent_id)
    refund = gateway.find_refund(intent_id)
    if refund is not None:
        log_line(job, f"refund {refund.id} found at the gateway: made by an earlier attempt")
    else:
        refund = gateway.create_refund(
            intent_id, idempotency_key=f"refund-{payment_id}", metadata={"payment_id": str(payment_id)}
        )
    with db.session() as session:
        payment = _hold_refund(session, payment_id, job_id, token)
        if payment.status == SUCCEEDED:
            payment.status = REFUNDED
            payment.stripe_refund_id = refund.id
            payment.refunded_at = utcnow()
        staged = _stage_refund_email(session, payment)
        summary = _refund_summary(payment)
    log.info("payment.refunded", extra={"payment_id": payment_id, "refund": refund.id})
    report_step(job, "refunded", refundId=refund.id)
    log_line(job, f"refunded: refund {refund.id} of payment intent {intent_id}")
    _publish_receipt_email(payment_id, staged)
    return summary


def _stage_refund_email(session: Session, payment: Payment) -> StagedJob | None:
    """Stage the refund receipt in the transaction that holds the payment, unless it was queued before."""
    if not payment.receipt_email or payment.refund_email_job_id is not None:
        return None
    staged = stage_job(
        session, "email", refund_message(payment), job_id=refund_receipt_job_id(payment), **email_options(payment)
    )
    payment.refund_email_job_id = staged.job_id
    return staged


def mark_failed(payment_id: int, reason: str, *, token: int, claim: bool = False) -> None:
    """Move a payment that has not succeeded to failed, as the delivery with token (StaleDelivery if replaced).

    claim: the final-failure hook, whose delivery may have failed before it claimed the row.
    """
    with get_db().session() as session:
        payment = _hold(session, payment_id, token, claim=claim)
        if payment.status in (PENDING, PROCESSING):
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
    """The payment job is out of attempts: fail the payment (unless it was charged) and alert.

    Fenced like the delivery it ends: if a newer delivery has claimed the payment,
    this one is stale and leaves the row and the alerts to it.
    """
    payment_id = job.data.get("paymentId")
    if payment_id is None:
        raise_alert("payment job failed", job_id=job.id, queue=job.queue, reason=reason)
        return
    if job.data.get("action") == REFUND:
        # The payment stays succeeded (charged): someone has to refund it by hand or retry the job.
        raise_alert("refund failed", job_id=job.id, queue=job.queue, payment_id=payment_id, reason=reason)
        return
    if _still_processing(int(payment_id)):
        # Out of snoozes while the gateway is still processing the charge: it may yet
        # succeed, so the payment is not failed; someone has to follow it up.
        raise_alert("payment still processing", job_id=job.id, queue=job.queue, payment_id=payment_id, reason=reason)
        return
    try:
        mark_failed(int(payment_id), reason, token=int(job.token), claim=True)
    except PermanentJobError:
        payment = None  # the row is gone
    except StaleDelivery as exc:
        log.warning("payment.stale_failure", extra={"job_id": job.id, "payment_id": payment_id, "error": str(exc)})
        return
    else:
        with get_db().session() as session:
            payment = session.get(Payment, int(payment_id))
    if payment is not None and payment.status == SUCCEEDED:
        # Charged, but the bookkeeping after the charge (the receipt email) gave up.
        raise_alert("receipt not sent", job_id=job.id, queue=job.queue, payment_id=payment_id, reason=reason)
        return
    raise_alert("payment failed", job_id=job.id, queue=job.queue, payment_id=payment_id, reason=reason)


def _still_processing(payment_id: int) -> bool:
    """Whether the payment's PaymentIntent is processing at the gateway (False if that cannot be known)."""
    with get_db().session() as session:
        payment = session.get(Payment, payment_id)
        intent_id = payment.stripe_payment_intent_id if payment is not None and payment.status == PROCESSING else None
    if intent_id is None:
        return False
    try:
        return gateway.retrieve_intent(intent_id).status == "processing"
    except stripe.StripeError as exc:
        log.warning("payment.intent_unknown", extra={"payment_id": payment_id, "error": str(exc)})
        return False
