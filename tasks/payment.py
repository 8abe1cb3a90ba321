"""The payment queue's task."""

from jobqueue import Job
from jobqueue.task import job_task
from rideshare.payments.queue import PAYMENT_QUEUE


@job_task(PAYMENT_QUEUE)
def charge_payment_task(job: Job) -> dict:
    """Charge one payment through Stripe, reporting each step; snoozes while the gateway is processing it.
    A job with action refund refunds its (charged) payment instead; one with action reconcile settles
    the payments left pending or processing (a shipped schedule's)."""
    from rideshare.payments.charge import charge_payment, refund_payment
    from rideshare.payments.schemas import RECONCILE, REFUND

    if job.data.get("action") == RECONCILE:
        from rideshare.payments.reconcile import reconcile_stale_payments

        return reconcile_stale_payments(job)
    if job.data.get("action") == REFUND:
        return refund_payment(int(job.data["paymentId"]), job_id=job.id, token=int(job.token), job=job)
    return charge_payment(int(job.data["paymentId"]), token=int(job.token), job=job)
