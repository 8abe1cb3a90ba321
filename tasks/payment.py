"""The payment queue's task."""

from jobqueue import Job
from jobqueue.task import job_task
from rideshare.payments.queue import PAYMENT_QUEUE


@job_task(PAYMENT_QUEUE)
def charge_payment_task(job: Job) -> dict:
    """Charge one payment through Stripe, reporting each step; snoozes while the gateway is processing it.
    A job with action refund refunds its (charged) payment instead."""
    from rideshare.payments.charge import charge_payment, refund_payment
    from rideshare.payments.schemas import REFUND

    if job.data.get("action") == REFUND:
        return refund_payment(int(job.data["paymentId"]), job_id=job.id, token=int(job.token), job=job)
    return charge_payment(int(job.data["paymentId"]), token=int(job.token), job=job)
