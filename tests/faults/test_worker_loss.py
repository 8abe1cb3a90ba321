"""Workers killed mid-task: nothing lost, nothing charged twice, poison jobs bounded."""

import random
import secrets
import signal
import threading
import time
from decimal import Decimal

import pytest
import stripe

from rideshare.db import get_db
from rideshare.jobs import add_email_job
from rideshare.payments.models import Payment
from rideshare.payments.service import create_payment
from rideshare.rides.models import Ride
from tests.faults.conftest import children

pytestmark = pytest.mark.faults


def succeeded_intents(localstripe_url: str) -> dict[str, list[str]]:
    """The ids of the succeeded PaymentIntents per payment id, as localstripe holds them."""
    client = stripe.StripeClient("sk_test_inspect", base_addresses={"api": localstripe_url})
    found: dict[str, list[str]] = {}
    for intent in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter():
        if intent.status == "succeeded":
            found.setdefault(intent.metadata.to_dict().get("payment_id"), []).append(intent.id)
    return found


def succeeded_charges(localstripe_url: str) -> dict[str, int]:
    """Succeeded PaymentIntents per payment id, as localstripe holds them."""
    return {payment_id: len(ids) for payment_id, ids in succeeded_intents(localstripe_url).items()}


def new_rides(count: int) -> list[int]:
    """count rides of rider 42: a ride's payment jobs run one at a time (its group), these run side by side."""
    with get_db().session() as session:
        rides = [Ride(rider_id="42", driver_id="d-1", pickup="A", dropoff="B") for _ in range(count)]
        session.add_all(rides)
        session.flush()
        return [ride.id for ride in rides]


def queue_payments(count: int, amount: str, *, receipts: bool = False) -> list:
    """count payments of rider 42, each for a ride of its own, each charge queued with a 2 s timeout.

    receipts: each payment's receipt is emailed to an address of its own.
    """
    return [
        create_payment(
            user_id="42",
            ride_id=ride_id,
            amount=Decimal(amount),
            currency="USD",
            payment_method="pm_card_visa",
            receipt_email=f"receipt-{secrets.token_hex(6)}@example.com" if receipts else None,
            timeout=2000,
        )
        for ride_id in new_rides(count)
    ]


def payment_rows() -> dict[int, str]:
    """Every payment's status, by id."""
    with get_db().session() as session:
        return {p.id: p.status for p in session.query(Payment).all()}


def test_sigkilled_payment_workers_lose_nothing_and_charge_once(rig):
    rig.services.stripe.latency = 0.05  # each gateway call takes 50 ms, so kills land mid-task
    with rig.app.app_context():
        worker = rig.worker("payment", concurrency=4)
        payments = queue_payments(200, "10.00")
        kills = 0
        for _ in range(6):
            time.sleep(0.6)
            pool = children(worker.pid)
            if pool:
                import os

                os.kill(random.choice(pool), signal.SIGKILL)
                kills += 1
        jobs = rig.wait_all([job.id for _, job in payments], timeout=120)

        rows = payment_rows()
    charges = succeeded_charges(rig.services.localstripe_url)
    states = [job.state for job in jobs]
    print(
        f"\nfault: payments={len(payments)} kills={kills} states={ {s: states.count(s) for s in set(states)} }"
        f" charges={sum(charges.values())} double={sum(1 for c in charges.values() if c > 1)}"
    )
    assert kills >= 5
    assert states.count("completed") == 200, "every payment job completes"
    assert set(rows.values()) == {"succeeded"}
    assert len(rows) == 200
    assert charges == {str(pid): 1 for pid in rows}, "exactly one charge per payment"
    assert rig.store.counts("payment")["active"] == 0


def test_sigkilled_threads_payment_worker_loses_nothing_and_charges_once(rig):
    """The shipped payment worker (a threads pool) killed whole, twice, with payments in flight."""
    rig.services.stripe.latency = 0.05
    with rig.app.app_context():
        worker = rig.worker("payment", concurrency=8, pool="threads")
        payments = queue_payments(120, "12.00")
        killed_mid_job = 0
        for _ in range(2):
            time.sleep(1.0)
            killed_mid_job += rig.store.counts("payment")["active"]
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            worker = rig.worker("payment", concurrency=8, pool="threads")
        jobs = rig.wait_all([job.id for _, job in payments], timeout=120)
        rows = payment_rows()
    charges = succeeded_charges(rig.services.localstripe_url)
    states = [job.state for job in jobs]
    print(
        f"\nfault: threads worker killed twice with {killed_mid_job} jobs active; payments={len(payments)}"
        f" states={ {s: states.count(s) for s in set(states)} } charges={sum(charges.values())}"
        f" recovered={sum(1 for j in jobs if j.attempts > 1)}"
    )
    assert killed_mid_job > 0, "the kills landed while payments were running"
    assert states.count("completed") == 120
    assert set(rows.values()) == {"succeeded"} and len(rows) == 120
    assert charges == {str(pid): 1 for pid in rows}, "exactly one charge per payment"
    assert rig.store.counts("payment")["active"] == 0


def test_a_job_that_keeps_killing_its_worker_fails_after_bounded_deliveries(rig):
    with rig.app.app_context():
        worker = rig.worker("email", concurrency=1, JOB_MAX_STALLS="2")
        data = {"to": "poison@example.com", "subject": "boom", "text": "x"}
        rig.services.smtp.handler.plan(data["to"], ("stall", 30), ("stall", 30), ("stall", 30), ("stall", 30))
        job = add_email_job(data, timeout=1000)
        deliveries = 0
        stop_at = time.monotonic() + 60
        seen_attempt = 0

        smtp = rig.services.smtp.handler

        def started() -> int:
            """Deliveries that reached the SMTP server: the job really ran in a pool process (a
            fetched job is active before its process starts it)."""
            with smtp.lock:
                return 4 - len(smtp.script.get(data["to"], ()))

        def killer() -> None:
            nonlocal deliveries, seen_attempt
            while time.monotonic() < stop_at:
                current = rig.store.get(job.id)
                if current is None or current.state == "failed":
                    return
                if current.state == "active" and started() > seen_attempt:
                    seen_attempt = started()
                    for pid in children(worker.pid):
                        import os

                        os.kill(pid, signal.SIGKILL)
                    deliveries += 1
                time.sleep(0.05)

        thread = threading.Thread(target=killer)
        thread.start()
        [final] = rig.wait_all([job.id], timeout=70)
        thread.join(5)
    print(f"\nfault: poison job killed its worker {deliveries} times, then: {final.failed_reason}")
    assert final.state == "failed"
    assert final.failed_reason.startswith("stalled")
    assert final.attempts == 3  # 1 + JOB_MAX_STALLS deliveries, then no more
    assert rig.services.smtp.handler.messages_to(data["to"]) == []


def test_sigterm_during_work_loses_and_duplicates_nothing(rig):
    with rig.app.app_context():
        worker = rig.worker("email", concurrency=4)
        jobs = []
        for i in range(60):
            data = {"to": f"term-{i}-{rig.env['JOB_KEY_PREFIX']}@example.com", "subject": "s", "text": "t"}
            rig.services.smtp.handler.plan(data["to"], ("stall", 0.3))
            jobs.append(add_email_job(data))
        time.sleep(1.0)
        worker.send_signal(signal.SIGTERM)  # warm shutdown mid-stream
        worker.wait(30)
        replacement = rig.worker("email", concurrency=4)
        final = rig.wait_all([j.id for j in jobs], timeout=60)
    received = [len(rig.services.smtp.handler.messages_to(j.data["to"])) for j in jobs]
    print(f"\nfault: SIGTERM with {len(jobs)} jobs in flight: sent once={received.count(1)}")
    assert {j.state for j in final} == {"completed"}
    assert received == [1] * len(jobs)
    assert replacement.poll() is None
