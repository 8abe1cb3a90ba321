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


def reopen_for_retry(job: Job, data: dict[str, Any]) -> Any:
    """Reopen a failed payment for an operator's retry, with a new PaymentMethod if given."""
    from rideshare.payments.charge import reopen_for_retry as run

    return run(job, data)
