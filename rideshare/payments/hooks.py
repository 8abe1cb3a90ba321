"""The payment queue's hooks and retry rule, light to import: the API imports them with the
policy, and each imports the Stripe SDK (through rideshare.payments.charge or gateway)
only when it runs, in a payment worker."""

from typing import Any

from jobqueue import Job


def is_transient_gateway_error(exc: BaseException) -> bool:
    """Network trouble, rate limits and Stripe 5xx: another attempt can fix them."""
    if type(exc).__module__.split(".")[0] != "stripe":
        return False  # not from the SDK: no need to import it to know
    from rideshare.payments.gateway import TRANSIENT_ERRORS

    return isinstance(exc, TRANSIENT_ERRORS)


def payment_failed_for_good(job: Job, reason: str) -> Any:
    """Mark the payment failed and alert (rideshare.payments.charge)."""
    from rideshare.payments.charge import payment_failed_for_good as run

    return run(job, reason)


def cancel_before_job(job: Job, reason: str) -> None:
    """Before a payment job is cancelled (by an operator, the API or a ride's cancel): cancel
    the payment itself, its PaymentIntent at Stripe first, so that no run of the job can
    charge it (rideshare.payments.service.cancel_payment). A payment already charged (or
    processing at the gateway) refuses: the job is left to finish."""
    from jobqueue import CancelRefused
    from rideshare.payments.service import PaymentCharged, cancel_payment

    try:
        cancel_payment(int(job.data["paymentId"]), reason)
    except PaymentCharged as exc:
        raise CancelRefused(str(exc)) from exc
    except LookupError:
        pass  # no payment row (a job added by hand): nothing to stop but the job


def reopen_for_retry(job: Job, data: dict[str, Any]) -> Any:
    """Reopen a failed payment for an operator's retry, with a new PaymentMethod if given."""
    from rideshare.payments.charge import reopen_for_retry as run

    return run(job, data)
