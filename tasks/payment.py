"""The payment queue's task."""

from celery import shared_task
from sqlalchemy.exc import OperationalError

from rideshare.jobs.options import Backoff
from rideshare.jobs.queue import Job, QueueUnavailable
from rideshare.jobs.task import JobTask
from rideshare.payments.gateway import TRANSIENT_ERRORS
from rideshare.payments.schemas import PaymentJobSchema
from rideshare.payments.service import charge_payment, payment_failed_for_good, reopen_for_retry


@shared_task(
    base=JobTask,
    name="payment.charge",
    queue="payment",
    attempts=5,
    backoff=Backoff("exponential", 5000),
    # Gateway 5xx, rate limits, timeouts and lost connections; a decline is permanent.
    # QueueUnavailable: the receipt email could not be queued after the charge.
    retry_on=(*TRANSIENT_ERRORS, OperationalError, QueueUnavailable),
    data_schema=PaymentJobSchema,
    on_final_failure=lambda task, job, reason: payment_failed_for_good(job, reason),
    # An operator's retry reopens the failed payment, with a new PaymentMethod if given.
    on_manual_retry=lambda task, job, data: reopen_for_retry(job, data),
)
def charge_payment_task(job: Job) -> dict:
    """Charge one payment through Stripe."""
    return charge_payment(int(job.data["paymentId"]))
