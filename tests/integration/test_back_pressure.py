"""Back-pressure from the gateways: a 429 from Stripe, or an SMTP 421, pauses its whole queue, and the
job that met it runs again afterwards without spending an attempt, and is charged or sent once.

Each test runs a worker of its own (own_queues_env, its own JOB_KEY_PREFIX), so the pause
stays off the session stack's queues. The payment test puts a fault proxy of its own in
front of localstripe, which answers the first confirm with 429 and Retry-After: 3 in
Stripe's place; the proxy records when each request came.
"""

import json
import secrets
import threading
import time
from decimal import Decimal

import pytest
import stripe

from devstack.processes import free_port, stop
from rideshare.db import get_db
from rideshare.jobs import add_email_job
from rideshare.payments.service import create_payment
from rideshare.rides.models import Ride
from tests.conftest import eventually, own_app, start_worker, wait_for_jobs
from tests.integration.test_payments import intents_for, payment_row
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration

RETRY_AFTER_S = 3
RATE_LIMITED = json.dumps(
    {"error": {"type": "rate_limit_error", "message": "Too many requests hit the API too quickly."}}
).encode()


def new_ride() -> int:
    with get_db().session() as session:
        ride = Ride(rider_id="42", driver_id="d-1", pickup="A", dropoff="B")
        session.add(ride)
    return ride.id


def charge(amount: str) -> tuple:
    """A payment of rider 42 for a ride of its own (its own group), its charge queued."""
    return create_payment(
        user_id="42", ride_id=new_ride(), amount=Decimal(amount), currency="usd", payment_method="pm_card_visa"
    )


def charges_of(localstripe_url: str, intent_ids: set[str]) -> int:
    """Charges localstripe made for these PaymentIntents."""
    client = stripe.StripeClient("sk_test_inspect", base_addresses={"api": localstripe_url})
    return sum(c.payment_intent in intent_ids for c in client.v1.charges.list(params={"limit": 100}).auto_paging_iter())


def test_a_429_pauses_the_payment_queue_for_its_retry_after_and_charges_once(app, stack, own_queues_env, tmp_path):
    tag = f"bp{secrets.token_hex(3)}"
    limited: list[tuple[str, float]] = []
    lock = threading.Lock()

    def first_confirm_rate_limited(method: str, path: str):
        if method != "POST" or not path.endswith("/confirm"):
            return None
        with lock:
            if limited:
                return None
            limited.append((path, time.time()))
        headers = {"Content-Type": "application/json", "Retry-After": str(RETRY_AFTER_S)}
        return 429, headers, RATE_LIMITED

    with FaultProxy(free_port(), stack.services.localstripe_url) as gateway:
        gateway.answer(first_confirm_rate_limited)
        env = {**own_queues_env, "JOB_KEY_PREFIX": tag, "STRIPE_API_BASE": gateway.url}
        with own_app(env) as own:
            queue = own.extensions["jobs"].queues["payment"]
            worker = start_worker(env, tmp_path / "payment.log", queues="payment", concurrency=2, name=f"{tag}@%h")
            try:
                first, first_job = charge("12.00")
                # The queue is throttled once the worker has ended the rate-limited attempt.
                assert eventually(lambda: queue.flow.status()["throttledMs"] > 0, timeout=20), limited
                paused = queue.flow.status()
                # Queued while the queue is paused: they wait too.
                others = [charge("7.00"), charge("8.00")]
                jobs = wait_for_jobs(
                    own.extensions["jobs"].store,
                    [first_job.id, *(job.id for _, job in others)],
                    ("completed", "failed"),
                    timeout=30,
                    logs=[tmp_path / "payment.log"],
                )
                metrics = own.extensions["jobs"].store.metrics()
                attempts = own.extensions["jobs"].store.attempts(first_job.id, "payment")
            finally:
                stop(worker)
        requests = list(gateway.requests)

    [(confirm_path, limited_at)] = limited
    after = [at for _, _, at in requests if at > limited_at]
    pause = min(after) - limited_at
    print(
        f"\nback-pressure: 429 with Retry-After {RETRY_AFTER_S} s; the next gateway request came {pause:.2f} s later; "
        f"throttled {paused['throttledMs']} ms when seen; {len(requests)} gateway requests"
    )
    assert [job.state for job in jobs] == ["completed"] * 3, [(j.id, j.failed_reason) for j in jobs]
    # No payment request reached the gateway while the queue was paused, and it carried on after.
    assert RETRY_AFTER_S - 0.1 <= pause <= RETRY_AFTER_S + 3, pause
    assert 0 < paused["throttledMs"] <= RETRY_AFTER_S * 1000

    # The rate-limited job ran twice on one attempt: the 429 gave its attempt back.
    first_done = jobs[0]
    assert first_done.attempts == 1
    assert len(attempts) == 2 and "Too many requests" in attempts[0]["error"] and attempts[1]["error"] is None
    assert attempts[1]["startedAt"] - attempts[0]["finishedAt"] >= (RETRY_AFTER_S - 0.1) * 1000
    assert metrics.get("payment:rate_limited") == 1
    assert metrics.get("payment:retried", 0) == 0

    # Charged once: one intent, confirmed once at the gateway (the 429 never reached it), one charge.
    [intent] = intents_for(stack, first.id)
    assert intent.status == "succeeded"
    assert confirm_path == f"/v1/payment_intents/{intent.id}/confirm"
    confirms = [at for method, path, at in requests if (method, path) == ("POST", confirm_path)]
    assert len(confirms) == 2 and confirms[1] - confirms[0] >= RETRY_AFTER_S - 0.1
    assert payment_row(first.id).stripe_payment_intent_id == intent.id
    assert payment_row(first.id).status == "succeeded"

    # The payments queued during the pause waited for it, then were charged once each, on one attempt.
    for (payment, _), job in zip(others, jobs[1:], strict=True):
        assert job.attempts == 1
        assert job.processed_on >= limited_at * 1000 + (RETRY_AFTER_S - 0.1) * 1000
        [other_intent] = intents_for(stack, payment.id)
        assert other_intent.status == "succeeded"
    intent_ids = {intent.id, *(intents_for(stack, p.id)[0].id for p, _ in others)}
    assert charges_of(stack.services.localstripe_url, intent_ids) == 3


def test_an_smtp_421_pauses_the_email_queue_then_the_mail_goes_once(stack, own_queues_env, tmp_path):
    tag = f"bp{secrets.token_hex(3)}"
    pause_ms = 3_000
    env = {**own_queues_env, "JOB_KEY_PREFIX": tag, "SMTP_BACK_PRESSURE_MS": str(pause_ms)}
    smtp = stack.services.smtp.handler
    busy = f"busy-{tag}@example.com"
    smtp.plan(busy, "421 4.7.0 Too many messages, slow down")
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        queue = app.extensions["jobs"].queues["email"]
        worker = start_worker(env, tmp_path / "email.log", queues="email", concurrency=2, name=f"{tag}@%h")
        try:
            first = add_email_job({"to": busy, "subject": "Receipt", "text": "hello"})
            assert eventually(lambda: queue.flow.status()["throttledMs"] > 0, timeout=20)
            others = [
                add_email_job({"to": f"later-{i}-{tag}@example.com", "subject": "Receipt", "text": "hi"})
                for i in range(3)
            ]
            jobs = wait_for_jobs(
                store, [first.id, *(j.id for j in others)], ("completed", "failed"), 30, [tmp_path / "email.log"]
            )
            attempts = store.attempts(first.id, "email")
            metrics = store.metrics()
        finally:
            stop(worker)

    assert [job.state for job in jobs] == ["completed"] * 4, [(j.id, j.failed_reason) for j in jobs]
    refused_at = attempts[0]["finishedAt"]
    assert attempts[0]["error"].startswith("SMTP 421")
    waited = attempts[1]["startedAt"] - refused_at
    later_sent = [smtp.messages_to(job.data["to"]) for job in others]
    first_after = min(received.at for [received] in later_sent) * 1000 - refused_at
    print(f"\nback-pressure: SMTP 421; the job ran again {waited} ms later, the next mail {first_after:.0f} ms later")
    # The queue took no job while paused: the mails queued meanwhile went after the pause, once each.
    assert pause_ms - 100 <= waited <= pause_ms + 3_000
    assert first_after >= pause_ms - 100
    assert all(len(sent) == 1 for sent in later_sent)
    # The refused mail went once, on its one attempt.
    assert len(smtp.messages_to(busy)) == 1
    assert jobs[0].attempts == 1
    assert metrics.get("email:rate_limited") == 1
    assert metrics.get("email:retried", 0) == 0
