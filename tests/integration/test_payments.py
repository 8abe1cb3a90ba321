"""The payment queue against a real worker, localstripe (through the official SDK) and SQL."""

import secrets
import time
from decimal import Decimal

import pytest
import stripe
from sqlalchemy import select

from rideshare.db import get_db
from rideshare.payments.models import Payment, Receipt
from rideshare.payments.service import create_payment
from tests.conftest import eventually

pytestmark = pytest.mark.integration


def create_ride(client, headers) -> int:
    response = client.post(
        "/rides", json={"riderId": "42", "driverId": "d-1", "pickup": "Main St", "dropoff": "Airport"}, headers=headers
    )
    assert response.status_code == 201
    return response.json["id"]


def intents_for(stack, payment_id: int) -> list:
    """Every PaymentIntent localstripe holds for our payment id."""
    client = stripe.StripeClient("sk_test_inspect", base_addresses={"api": stack.services.localstripe_url})
    intents = client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
    return [pi for pi in intents if pi.metadata.to_dict().get("payment_id") == str(payment_id)]


def payment_row(payment_id: int) -> Payment:
    with get_db().session() as session:
        return session.get(Payment, payment_id)


def post_payment(client, headers, ride_id: int, **body) -> dict:
    payload = {"amount": "25.50", "paymentMethod": "pm_card_visa", "rideId": ride_id, **body}
    response = client.post("/payments", json=payload, headers=headers)
    assert response.status_code == 202, response.json
    return response.json


def test_payment_is_charged_once_and_receipted(app, client, stack, auth_headers):
    headers = auth_headers("42")
    ride_id = create_ride(client, headers)
    to = f"rider-{secrets.token_hex(4)}@example.com"
    accepted = post_payment(client, headers, ride_id, receiptEmail=to)
    job = stack.wait_for_job(accepted["jobId"])

    assert job.state == "completed", job.failed_reason
    assert job.attempts == 1
    payment = payment_row(accepted["paymentId"])
    assert payment.status == "succeeded"
    [intent] = intents_for(stack, payment.id)
    assert intent.status == "succeeded"
    assert intent.amount == 2550 and intent.currency == "usd"
    assert payment.stripe_payment_intent_id == intent.id
    with get_db().session() as session:
        receipt = session.scalar(select(Receipt).where(Receipt.payment_id == payment.id))
    assert receipt.number == f"RCPT-{payment.id:08d}"
    receipt_job = stack.wait_for_job(receipt.email_job_id)
    assert receipt_job.state == "completed"
    [mail] = stack.services.smtp.handler.messages_to(to)
    assert receipt.number in mail.message["Subject"]

    response = client.get(f"/jobs/{accepted['jobId']}", headers=headers)
    assert response.status_code == 200
    assert response.json["state"] == "completed"
    assert response.json["result"]["paymentIntentId"] == intent.id


def test_card_decline_fails_after_one_attempt_and_alerts(app, client, stack, auth_headers):
    headers = auth_headers("42")
    ride_id = create_ride(client, headers)
    accepted = post_payment(client, headers, ride_id, paymentMethod="pm_card_chargeCustomerFail")
    job = stack.wait_for_job(accepted["jobId"])

    assert (job.state, job.attempts) == ("failed", 1)
    assert job.failed_reason.startswith("card_declined")
    payment = payment_row(accepted["paymentId"])
    assert payment.status == "failed"
    assert payment.failure_reason.startswith("card_declined")
    assert [pi.status for pi in intents_for(stack, payment.id)] == ["requires_payment_method"]
    # The alert comes from the final-failure hook, just after the job is stored as failed.
    alerts = eventually(lambda: [a for a in stack.services.alerts.received if a.get("job_id") == job.id])
    assert alerts and alerts[0]["queue"] == "payment"


def test_gateway_errors_are_retried_then_charge_once(app, client, stack, auth_headers):
    ride_id = create_ride(client, auth_headers("42"))
    stack.services.stripe.inject("500", "drop")
    payment, job = create_payment(
        user_id="42",
        ride_id=ride_id,
        amount=Decimal("12.00"),
        currency="eur",
        payment_method="pm_card_visa",
        backoff={"type": "exponential", "delay": 300},
    )
    job = stack.wait_for_job(job.id)

    assert job.state == "completed", job.failed_reason
    assert job.attempts == 3
    attempts = app.extensions["jobs"].store.attempts(job.id)
    assert attempts[0]["error"].startswith("APIError")
    assert attempts[1]["error"].startswith("APIConnectionError")
    assert attempts[2]["error"] is None
    # Exponential: 300 ms after the first failure, 600 ms after the second.
    assert attempts[1]["startedAt"] - attempts[0]["finishedAt"] >= 300
    assert attempts[2]["startedAt"] - attempts[1]["finishedAt"] >= 600
    assert payment_row(payment.id).status == "succeeded"
    [intent] = intents_for(stack, payment.id)
    assert (intent.amount, intent.currency) == (1200, "eur")


def test_a_message_sent_past_the_store_charges_nothing(app, client, stack, auth_headers):
    headers = auth_headers("42")
    accepted = post_payment(client, headers, create_ride(client, headers))
    stack.wait_for_job(accepted["jobId"])
    # A Celery message straight to the task, with the job's id: jobs are taken only from the
    # store, under a lease, so it runs nothing.
    celery = app.extensions["celery"]
    celery.send_task("payment.charge", args=[accepted["jobId"]], task_id=accepted["jobId"], queue="payment")
    deadline = time.monotonic() + 10
    while "job.not_from_store" not in stack.worker_log.read_text():
        assert time.monotonic() < deadline, "the second delivery never reached the worker"
        time.sleep(0.1)

    assert len(intents_for(stack, accepted["paymentId"])) == 1
    job = stack.job(accepted["jobId"])
    assert (job.state, job.attempts) == ("completed", 1)
