"""The payment queue's whole policy. The Stripe SDK is named, not imported: only payment
workers load it, when a charge first fails."""

from sqlalchemy.exc import OperationalError

from jobqueue import Backoff, QueuePolicy, QueueUnavailable
from rideshare.payments.schemas import PaymentJobSchema

PAYMENT_QUEUE = QueuePolicy(
    name="payment",
    task="payment.charge",
    schema=PaymentJobSchema,
    attempts=5,
    backoff=Backoff("exponential", 5000),
    # Gateway 5xx, rate limits, timeouts and lost connections; a decline is permanent.
    # QueueUnavailable: the receipt email could not be queued after the charge.
    retry_on=("rideshare.payments.gateway:TRANSIENT_ERRORS", OperationalError, QueueUnavailable),
    priorities=10,
    on_final_failure="rideshare.payments.charge:payment_failed_for_good",
    # An operator's retry reopens the failed payment, with a new PaymentMethod if given.
    on_manual_retry="rideshare.payments.charge:reopen_for_retry",
)
