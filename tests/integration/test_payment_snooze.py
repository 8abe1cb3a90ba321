"""A PaymentIntent processing at the gateway snoozes its payment job instead of spending attempts.

Localstripe has no card whose charge stays processing, so the gateway's answers are
changed on the wire: the fault proxy in front of it reports this ride's intent as
processing twice before it lets the real answer (succeeded) through.
"""

import secrets
import threading
from decimal import Decimal

import pytest

from rideshare.payments.service import create_payment
from tests.integration.test_payments import create_ride, intents_for, payment_row

pytestmark = pytest.mark.integration


def processing_for(ride_id: int, times: int) -> tuple[list[str], object]:
    """A rewrite rule: this ride's succeeded intent reads processing the first times it is answered."""
    seen: list[str] = []
    lock = threading.Lock()

    def rule(method: str, path: str, body: dict) -> dict | None:
        if body.get("object") != "payment_intent" or body.get("status") != "succeeded":
            return None
        if (body.get("metadata") or {}).get("ride_id") != str(ride_id):
            return None
        with lock:
            if len(seen) >= times:
                return None
            seen.append(f"{method} {path}")
        return {**body, "status": "processing"}

    return seen, rule


def test_a_processing_intent_snoozes_the_job_and_is_charged_once(app, client, stack, auth_headers):
    ride_id = create_ride(client, auth_headers("42"))
    seen, rule = processing_for(ride_id, times=2)
    remove = stack.services.stripe.rewrite(rule)
    to = f"rider-{secrets.token_hex(4)}@example.com"
    try:
        payment, job = create_payment(
            user_id="42",
            ride_id=ride_id,
            amount=Decimal("9.00"),
            currency="usd",
            payment_method="pm_card_visa",
            receipt_email=to,
            # The poll interval is the job's backoff: quick here.
            backoff={"type": "fixed", "delay": 200},
        )
        job = stack.wait_for_job(job.id)
    finally:
        remove()

    assert job.state == "completed", job.failed_reason
    assert (job.attempts, job.snoozes) == (1, 2)
    # The confirm's answer, then the next run's read of the same intent, were processing.
    assert len(seen) == 2 and seen[0].endswith("/confirm") and seen[1].startswith("GET")
    [intent] = intents_for(stack, payment.id)
    assert intent.status == "succeeded"
    row = payment_row(payment.id)
    assert (row.status, row.stripe_payment_intent_id) == ("succeeded", intent.id)

    # What support staff see: the last step, and a line per step, with no card data.
    store = app.extensions["jobs"].store
    assert job.progress == {"step": "charged", "paymentIntentId": intent.id, "receiptNumber": f"RCPT-{payment.id:08d}"}
    lines = [entry["line"] for entry in store.logs(job.id, "payment")]
    assert lines[0] == f"payment intent {intent.id} created"
    assert [line for line in lines if "processing" in line] == [
        f"payment intent {intent.id} is still processing; looking again in 0.2 s"
    ] * 2
    assert lines[-1] == f"charged: payment intent {intent.id} succeeded, receipt RCPT-{payment.id:08d}"
    assert not [line for line in lines if "pm_" in line or "card_visa" in line]

    # The receipt email, tagged with the ride and the payment, reports the server's reply.
    receipt_job = stack.wait_for_job(f"receipt-{payment.job_id}")
    assert receipt_job.state == "completed"
    assert receipt_job.progress == {"step": "sent", "reply": "250 OK queued"}
    assert len(stack.services.smtp.handler.messages_to(to)) == 1
    found, _ = store.search("email", tags=[f"rideId:{ride_id}", f"paymentId:{payment.id}"])
    assert [job_id for _, job_id in found] == [receipt_job.id]
    found, _ = store.search("payment", tags=[f"rideId:{ride_id}"])
    assert [job_id for _, job_id in found] == [job.id]
