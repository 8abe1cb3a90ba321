"""A worker frozen past its leases (SIGSTOP) and woken (SIGCONT) after another worker took
its jobs over: its late finishes are refused, its late writes change no payment row and
send no receipt twice, and it goes on taking work."""

import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import select

from jobqueue.store import now_ms
from rideshare.db import get_db
from rideshare.payments.models import Payment, Receipt
from tests.conftest import eventually
from tests.faults.test_worker_loss import queue_payments, succeeded_charges, succeeded_intents

pytestmark = pytest.mark.faults

PAYMENTS = 16
FROZEN_THREADS = 8


def snapshot(store, ids):
    """What a finished job shows: state, finish time, attempts, result and attempt log length."""
    return {
        job.id: (job.state, job.finished_at, job.attempts, job.result, len(store.attempts(job.id)))
        for job in store.get_many(ids)
    }


def payment_records(ids: list[int]) -> dict[int, tuple]:
    """What SQL says of each payment: status, PaymentIntent, and its receipt's intent and email job."""
    with get_db().session() as session:
        found = session.execute(
            select(
                Payment.id,
                Payment.status,
                Payment.stripe_payment_intent_id,
                Receipt.stripe_payment_intent_id,
                Receipt.email_job_id,
            )
            .outerjoin(Receipt, Receipt.payment_id == Payment.id)
            .where(Payment.id.in_(ids))
        ).all()
    return {payment_id: tuple(rest) for payment_id, *rest in found}


def stale_finishes(worker: subprocess.Popen) -> int:
    """How many of its old deliveries a worker was refused, by its log: a finish the job store
    refused, or a fetched job it was about to start when it woke, whose lease had been taken over."""
    text = worker.log.read_text()  # type: ignore[attr-defined]
    return text.count('"event": "job.stale_finish"') + text.count('"event": "job.skipped_delivery"')


def test_a_woken_worker_changes_no_job_and_takes_new_work(rig):
    # Each gateway call takes 0.4 s, so the frozen worker is mid-charge in all its threads.
    rig.services.stripe.latency = 0.4
    store = rig.store
    with rig.app.app_context():
        rig.worker("email", concurrency=2)  # sends the receipts, each to an address of its own
        frozen = rig.worker("payment", concurrency=FROZEN_THREADS, pool="threads")
        payments = queue_payments(PAYMENTS, "12.00", receipts=True)
        ids = [job.id for _, job in payments]
        held = eventually(lambda: store.counts("payment")["active"] >= FROZEN_THREADS, timeout=30)
        assert held, store.counts("payment")
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            frozen_at = now_ms()
            rescuer = rig.worker("payment", concurrency=FROZEN_THREADS, pool="threads")
            # The frozen worker's jobs come back when their leases (2 s timeout + 7 s) run out.
            jobs = rig.wait_all(ids, timeout=90)
            before = snapshot(store, ids)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        rescued = [j for j in jobs if j.processed_on and j.processed_on > frozen_at and j.attempts > 1]
        # Woken, its threads' gateway calls return and each tries to go on with its old delivery:
        # refused by the payment row (StaleDelivery, then no failure is recorded for a job it
        # no longer holds) or by the job store's finish. Either way the worker logs it.
        stale = eventually(lambda: stale_finishes(frozen) >= len(rescued), timeout=20)
        time.sleep(1)
        after = snapshot(store, ids)
        metrics = store.metrics()

        # It keeps working: with the rescuer gone, new payments are taken by the woken worker.
        rescuer.send_signal(signal.SIGTERM)
        rescuer.wait(30)
        woke_at = time.monotonic()
        more = queue_payments(4, "13.00", receipts=True)
        later = rig.wait_all([job.id for _, job in more], timeout=30)
        took_s = time.monotonic() - woke_at
        beat = {name: info for name, info in store.workers().items() if info.get("pid") == frozen.pid}
        # Every receipt email has gone out (its job is done) before the SMTP sink is read.
        charged = [payment for payment, _ in payments + more]
        receipt_jobs = rig.wait_all([f"receipt-{payment.job_id}" for payment in charged], timeout=60)
        records = payment_records([payment.id for payment in charged])
    charges = succeeded_charges(rig.services.localstripe_url)
    intents = succeeded_intents(rig.services.localstripe_url)
    mails = {payment.id: len(rig.services.smtp.handler.messages_to(payment.receipt_email)) for payment in charged}
    log = frozen.log.read_text()  # type: ignore[attr-defined]
    print(
        f"\nfencing: payments={PAYMENTS} rescued={len(rescued)} stale_finish={metrics.get('payment:stale_finish')}"
        f" stale_logged={stale_finishes(frozen)}"
        f" completed={metrics.get('payment:completed')} new_jobs_after_wake_s={took_s:.1f}"
    )
    assert len(rescued) >= FROZEN_THREADS // 2, [(j.id, j.attempts) for j in jobs]
    assert stale, (stale_finishes(frozen), metrics)
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert all(state == "completed" for state, *_ in after.values())
    assert metrics["payment:completed"] == PAYMENTS  # each job once, though two deliveries ran it
    assert '"event": "job.stale_finish"' in log
    [(name, info)] = beat.items()
    assert now_ms() - info["lastSeen"] < 5000, info
    assert [j.state for j in later] == ["completed"] * len(more)
    assert {j.worker for j in later} == {name}
    assert took_s < 15
    assert charges == {str(p.id): 1 for p, _ in payments + more}, charges
    # The payment rows as the delivery that charged them left them: no late write set one back
    # to processing or pointed it at the frozen worker's own PaymentIntent.
    want = {p.id: ("succeeded", intents[str(p.id)][0], intents[str(p.id)][0], f"receipt-{p.job_id}") for p in charged}
    assert records == want, {k: (records.get(k), v) for k, v in want.items() if records.get(k) != v}
    assert [j.state for j in receipt_jobs] == ["completed"] * len(charged)
    assert mails == {p.id: 1 for p in charged}, mails
