"""Redis, the job store and the Celery broker at once, frozen (SIGSTOP) and woken (SIGCONT).

Redis killed and restarted from its AOF while jobs are being added is
tests/faults/test_broker.py::test_redis_restart_mid_stream_keeps_every_accepted_job.
This file freezes it: every client's connection stays open and unanswered, the
job store's calls time out and retry, Celery's own connection hangs. Once
woken, a worker that stopped consuming (celery/celery#8030, #8082) would leave
its queue's new jobs waiting for ever.

A store call that timed out during the freeze is still in Redis's socket
buffer, so on waking Redis runs it as well as the client's retry: a finish run
twice is refused the second time by its token, which is the job.stale_finish
lines the worker logs show for jobs that completed at their first attempt.
"""

import signal
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from rideshare.analytics.models import AnalyticsEvent
from rideshare.db import get_db
from rideshare.jobs import add_analytics_job, add_analytics_jobs, add_email_job
from rideshare.payments.service import create_payment
from tests.faults.test_worker_loss import new_rides, payment_rows, succeeded_charges

pytestmark = pytest.mark.faults

QUEUES = ("email", "analytics", "payment")
FREEZE_S = 15.0
# New jobs added after the wake must complete within this long of it, on every queue.
FRESH_WITHIN_S = 15.0


def mail(tag: str, i: int, prefix: str) -> dict:
    return {"to": f"{tag}-{i}-{prefix}@example.com", "subject": "s", "text": "t"}


def ride_event(tag: str, i: int, prefix: str) -> dict:
    return {
        "event": "ride_completed",
        "eventId": f"evt-{tag}-{i}-{prefix}",
        "driverId": f"driver-{prefix}",
        "data": {"fare": "3.00", "distance": 1.0, "duration": 60},
    }


def queue_payments(count: int, amount: str) -> list:
    """count payments of rider 42, each for a new ride of its own (a ride's payments run one at a
    time), each charge queued with the default timeout.

    (test_worker_loss.queue_payments gives each job a 2 s timeout, a 9 s lease: a 15 s
    freeze would then also stall the payments in flight, which is another test.)
    """
    return [
        create_payment(
            user_id="42", ride_id=ride_id, amount=Decimal(amount), currency="USD", payment_method="pm_card_visa"
        )[1]
        for ride_id in new_rides(count)
    ]


def events_recorded(event_ids: list[str]) -> dict[str, int]:
    """How many analytics rows each event id has."""
    with get_db().session() as session:
        rows = session.execute(
            select(AnalyticsEvent.event_id, func.count())
            .where(AnalyticsEvent.event_id.in_(event_ids))
            .group_by(AnalyticsEvent.event_id)
        ).all()
    return dict(rows)


def log_count(worker, event: str) -> int:
    return worker.log.read_text(errors="replace").count(f'"event": "{event}"')


def test_redis_frozen_15_s_then_every_queue_takes_fresh_jobs(rig):
    prefix = rig.env["JOB_KEY_PREFIX"]
    smtp = rig.services.smtp.handler
    rig.services.stripe.latency = 0.1  # each gateway call 100 ms: payments are mid-charge at the freeze
    with rig.app.app_context():
        # One worker per queue, as shipped: threads for email and payment, prefork for analytics.
        workers = {
            "email": rig.worker("email", concurrency=4, pool="threads"),
            "analytics": rig.worker("analytics", concurrency=2),
            "payment": rig.worker("payment", concurrency=4, pool="threads"),
        }
        # Before the freeze: work running on every queue and more waiting behind it.
        before = {"email": [], "analytics": [], "payment": []}
        for i in range(12):
            data = mail("before", i, prefix)
            if i < 4:
                smtp.plan(data["to"], ("stall", 3.0))  # still in the SMTP conversation when Redis freezes
            before["email"].append(add_email_job(data))
        before["analytics"] = add_analytics_jobs([ride_event("before", i, prefix) for i in range(200)])
        before["payment"] = queue_payments(8, "9.00")
        time.sleep(0.5)
        at_freeze = {q: rig.store.counts(q) for q in QUEUES}
        assert at_freeze["email"]["active"] >= 1, at_freeze

        rig.redis_proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(FREEZE_S)
        finally:
            rig.redis_proc.send_signal(signal.SIGCONT)
        woke = time.monotonic()

        fresh = {
            "email": [add_email_job(mail("after", i, prefix)) for i in range(5)],
            "analytics": [add_analytics_job(ride_event("after", i, prefix)) for i in range(5)],
            "payment": queue_payments(3, "4.00"),
        }
        added_in = time.monotonic() - woke
        first_done: dict[str, float] = {}
        all_done: dict[str, float] = {}
        while len(all_done) < len(QUEUES) and time.monotonic() - woke < FRESH_WITHIN_S:
            for queue, jobs in fresh.items():
                if queue in all_done:
                    continue
                states = [j.state if j else None for j in rig.store.get_many([j.id for j in jobs])]
                if "completed" in states and queue not in first_done:
                    first_done[queue] = round(time.monotonic() - woke, 2)
                if states.count("completed") == len(jobs):
                    all_done[queue] = round(time.monotonic() - woke, 2)
            time.sleep(0.05)
        fresh_final = {q: rig.store.get_many([j.id for j in jobs]) for q, jobs in fresh.items()}

        before_ids = [j.id for jobs in before.values() for j in jobs]
        before_final = rig.wait_all(before_ids, timeout=60)
        before_done = round(time.monotonic() - woke, 2)
        rows = payment_rows()
        recorded = events_recorded([j.data["eventId"] for j in before["analytics"] + fresh["analytics"]])
    charges = succeeded_charges(rig.services.localstripe_url)
    emails = before["email"] + fresh["email"]
    sent = [len(smtp.messages_to(j.data["to"])) for j in emails]
    fetch_failed = {q: log_count(w, "fetch.failed") for q, w in workers.items()}
    stale = {q: log_count(w, "job.stale_finish") for q, w in workers.items()}
    broker_lost = {q: w.log.read_text(errors="replace").count("Connection to broker lost") for q, w in workers.items()}
    end_states = [j.state for j in before_final]
    print(
        f"\nfault: redis SIGSTOPped {FREEZE_S:g} s; at the freeze (active/waiting): "
        + ", ".join(f"{q} {c['active']}/{c['waiting']}" for q, c in at_freeze.items())
        + f"\n  after SIGCONT: fresh jobs added in {added_in:.2f} s; first fresh job completed (s): {first_done};"
        f" all fresh completed (s): {all_done}; every pre-freeze job ended by {before_done} s"
        f"\n  pre-freeze jobs: { {s: end_states.count(s) for s in set(end_states)} }"
        f" attempts>1={sum(j.attempts > 1 for j in before_final)}"
        f" sent-once={sent.count(1)}/{len(emails)} charges={sum(charges.values())}/{len(rows)}"
        f" workers alive={sum(w.poll() is None for w in workers.values())}"
        f"\n  worker logs: fetch.failed={fetch_failed} job.stale_finish={stale} broker connection lost={broker_lost}"
    )
    for queue in QUEUES:
        states = [j.state if j else None for j in fresh_final[queue]]
        assert states == ["completed"] * len(states), f"{queue}: fresh jobs {states} {FRESH_WITHIN_S} s after the wake"
    assert {j.state for j in before_final} == {"completed"}
    assert sent == [1] * len(emails), "each email sent once"
    assert set(rows.values()) == {"succeeded"} and len(rows) == 11
    assert charges == {str(pid): 1 for pid in rows}, "exactly one charge per payment"
    assert recorded == {j.data["eventId"]: 1 for j in before["analytics"] + fresh["analytics"]}
    assert all(w.poll() is None for w in workers.values())
    assert all(rig.store.counts(q)["active"] == 0 for q in QUEUES)
