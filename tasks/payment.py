"""The payment queue's task."""

from celery import shared_task
from sqlalchemy.exc import OperationalError

from rideshare.jobs.options import Backoff
from rideshare.jobs.queue import Job
from rideshare.jobs.task import JobTask
from rideshare.payments.gateway import TRANSIENT_ERRORS
from rideshare.payments.service import charge_payment, payment_failed_for_good


@shared_task(
    base=JobTask,
    name="payment.charge",
    queue="payment",
    attempts=5,
    backoff=Backoff("exponential", 5000),
    # Gateway 5xx, rate limits, timeouts and lost connections; a decline is permanent.
    retry_on=(*TRANSIENT_ERRORS, OperationalError),
    on_final_failure=lambda task, job, reason: payment_failed_for_good(job, reason),
)
def charge_payment_task(job: Job) -> dict:
    """Charge one payment through Stripe."""
    return charge_payment(int(job.data["paymentId"]))
