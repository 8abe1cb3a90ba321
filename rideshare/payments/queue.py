"""The payment queue's whole policy. Its hooks and retry rule import the Stripe SDK only
when they run: only payment workers load it."""

from sqlalchemy.exc import OperationalError

from jobqueue import Backoff, QueuePolicy
from rideshare.payments.hooks import (
    cancel_before_job,
    gateway_back_pressure,
    is_transient_gateway_error,
    payment_failed_for_good,
    reopen_for_retry,
)
from rideshare.payments.schemas import PaymentJobSchema

PAYMENT_QUEUE = QueuePolicy(
    name="payment",
    task="payment.charge",
    schema=PaymentJobSchema,
    attempts=5,
    backoff=Backoff("exponential", 5000),
    # Gateway 5xx, timeouts and lost connections; a decline is permanent.
    # (The receipt email is staged in the outbox with the payment's last write, so a store
    # that cannot take it after the charge leaves it to the relay, not to a retry.)
    retry_on=(is_transient_gateway_error, OperationalError),
    # Stripe's 429 is not this job's failure: the whole queue takes no job for its Retry-After
    # (1 s without one, 60 s at most) and the job waits again, its attempt given back. A 429
    # on the confirm charged nothing; the rerun confirms the stored intent with the same key.
    back_pressure=gateway_back_pressure,
    priorities=10,
    # Found by payment id (GET /admin/jobs?paymentId=); the ride id is tagged where it is staged.
    tags=("paymentId",),
    # A PaymentIntent still processing is polled by snoozing (rideshare.payments.charge),
    # at most this often: about 11 hours with this backoff (5 s doubling, 15 min at most).
    max_snoozes=50,
    on_final_failure=payment_failed_for_good,
    # A cancel (an operator's, or a ride's) cancels the payment at Stripe first, or is refused
    # once it is charged; a running charge is then stopped only at its check points, never
    # cut mid-call (Stripe refuses to confirm a cancelled intent).
    on_cancel=cancel_before_job,
    terminate_on_cancel=False,
    # An operator's retry reopens the failed payment, with a new PaymentMethod if given.
    on_manual_retry=reopen_for_retry,
)
