"""The payment queue's hooks and retry rule, light to import: the API imports them with the
policy, and each imports the Stripe SDK (through rideshare.payments.charge or gateway)
only when it runs, in a payment worker."""

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from jobqueue import Job

# How long the payment queue takes no job after Stripe's 429: its Retry-After, else a
# second; never longer than a minute, whatever a proxy or a bad header says.
GATEWAY_PAUSE_MS = 1_000
MAX_GATEWAY_PAUSE_MS = 60_000


def is_transient_gateway_error(exc: BaseException) -> bool:
    """Network trouble, rate limits and Stripe 5xx: another attempt can fix them."""
    if type(exc).__module__.split(".")[0] != "stripe":
        return False  # not from the SDK: no need to import it to know
    from rideshare.payments.gateway import TRANSIENT_ERRORS

    return isinstance(exc, TRANSIENT_ERRORS)


def gateway_back_pressure(exc: BaseException) -> int | None:
    """Stripe's rate limit (HTTP 429): pause the payment queue for its Retry-After (ms), else None.

    The job goes back to waiting without spending an attempt; its rerun finds the stored
    PaymentIntent and confirms it with the same idempotency key (rideshare.payments.charge).
    """
    if type(exc).__module__.split(".")[0] != "stripe":
        return None  # not from the SDK: no need to import it to know
    import stripe

    if not isinstance(exc, stripe.RateLimitError):
        return None
    return retry_after_ms(exc.headers or {}, GATEWAY_PAUSE_MS, MAX_GATEWAY_PAUSE_MS)


def retry_after_ms(headers: Any, default_ms: int, max_ms: int, now: datetime | None = None) -> int:
    """A Retry-After header (seconds, or an HTTP date) in ms, from 1 to max_ms; default_ms without a usable one."""
    raw = next((str(value).strip() for key, value in headers.items() if key.lower() == "retry-after"), "")
    try:
        ms = float(raw) * 1000
    except ValueError:
        try:
            ms = (parsedate_to_datetime(raw) - (now or datetime.now(UTC))).total_seconds() * 1000
        except (TypeError, ValueError):
            ms = default_ms
    if not math.isfinite(ms):
        ms = default_ms
    return int(min(max(ms, 1), max_ms))


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
    from rideshare.payments.schemas import RECONCILE, REFUND
    from rideshare.payments.service import PaymentCharged, cancel_payment

    if job.data.get("action") in (REFUND, RECONCILE):
        return  # nothing to stop at Stripe: the refund stops at its check point before the call
    try:
        cancel_payment(int(job.data["paymentId"]), reason)
    except PaymentCharged as exc:
        raise CancelRefused(str(exc)) from exc
    except LookupError:
        pass  # no payment row (a job added by hand): nothing to stop but the job


def reopen_for_retry(job: Job, data: dict[str, Any]) -> Any:
    """Reopen a failed payment for an operator's retry, with a new PaymentMethod if given."""
    from rideshare.payments.charge import reopen_for_retry as run
    from rideshare.payments.schemas import RECONCILE

    if job.data.get("action") == RECONCILE:
        return None  # a sweep: no payment of its own to reopen

    return run(job, data)
