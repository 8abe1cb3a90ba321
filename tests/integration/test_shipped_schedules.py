"""The shipped schedules against real worker processes, localstripe (through the SDK), the SMTP
sink and SQL: the nightly payout summary, the ride expiry sweep and the payment re-check each do
their work, and the schedules are made at a worker's start and never over an operator's change.

Each test has a job store of its own (own_queues_env, a key prefix of its own); the SQL database
is the session's, shared with other tests. So the sweeps' thresholds are set far out (years) and
the rows a test makes stale are dated 2000: a sweep here touches no other test's rides or payments.
"""

import secrets
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update

from devstack.processes import stop
from jobqueue.schedules import Schedules
from rideshare.analytics.payouts import payout_email_job_id
from rideshare.db import get_db
from rideshare.jobs import get_job, get_queue, get_schedule, pause_schedule, remove_schedule, upsert_schedule
from rideshare.jobs.shipped import marker_key, seed_shipped_schedules, shipped_schedules
from rideshare.payments import gateway
from rideshare.payments.models import Payment
from rideshare.payments.service import create_payment
from rideshare.rides.models import Ride
from rideshare.rides.service import request_ride
from tests.conftest import eventually, own_app, start_worker, wait_for_jobs
from tests.integration.test_payments import intents_for, payment_row

pytestmark = pytest.mark.integration

SHIPPED = ["payment-recheck", "payout-summary", "ride-expiry"]
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
# Rows older than this (about 10 years) are stale to the sweeps run here: only LONG_AGO ones.
FAR_MINUTES = str(10 * 365 * 24 * 60)


@pytest.fixture
def env(own_queues_env) -> dict[str, str]:
    return {
        **own_queues_env,
        "JOB_KEY_PREFIX": f"shp{secrets.token_hex(3)}",
        "SHIPPED_SCHEDULES": "true",
        "RIDE_EXPIRY_MINUTES": FAR_MINUTES,
        "PAYMENT_RECHECK_AFTER_MINUTES": FAR_MINUTES,
        "JOB_KEEP_COMPLETED": "1000",
    }


def run_job(queue: str, data: dict, timeout: float = 20, logs=()) -> dict:
    """Add a job (as an operator's run-now of a schedule's job) and wait for it to complete; its result."""
    job = get_queue(queue).add(data, job_id=f"now-{secrets.token_hex(4)}")
    [done] = wait_for_jobs(get_queue(queue).store, [job.id], ("completed", "failed"), timeout, logs)
    assert done.state == "completed", (done.failed_reason, done.result)
    return done.result


def test_shipped_schedules_are_made_at_start_and_an_operators_changes_survive_restarts(env, tmp_path, sqlite_only):
    with own_app(env) as app:
        jobs = app.extensions["jobs"]
        assert [s.id for s in Schedules(jobs).list_all(history=False)] == []
        worker = start_worker(env, tmp_path / "w1.log", queues="email", concurrency=1, pool="threads")
        stop(worker)
        made = {s.id: s for s in Schedules(jobs).list_all(history=False)}
        assert sorted(made) == SHIPPED
        payout = made["payout-summary"]
        assert (payout.spec.cron, payout.spec.tz, payout.queue, payout.missed) == (
            "0 3 * * *",
            "UTC",
            "analytics",
            "run_once",
        )
        assert payout.data == {"event": "payout_summary", "eventId": "payout-summary"}
        assert (made["ride-expiry"].spec.cron, made["ride-expiry"].data["event"]) == ("*/5 * * * *", "expire_rides")
        assert (made["payment-recheck"].queue, made["payment-recheck"].data) == ("payment", {"action": "reconcile"})

        # An operator pauses one, retimes another and removes the third.
        pause_schedule("payout-summary")
        retimed = upsert_schedule(
            "ride-expiry",
            cron="0 0 1 1 *",
            tz="Europe/Paris",
            job={"queue": "analytics", "data": made["ride-expiry"].data},
        )
        remove_schedule("payment-recheck")

        # Two workers start at once, with other settings even: nothing of it is written back.
        restart = {**env, "PAYOUT_SUMMARY_CRON": "15 4 * * *", "RIDE_EXPIRY_CRON": "*/2 * * * *"}
        workers = []
        started = [
            threading.Thread(
                target=lambda i=i: workers.append(
                    start_worker(restart, tmp_path / f"r{i}.log", queues="email", concurrency=1, pool="threads")
                )
            )
            for i in range(2)
        ]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join(90)
        for worker in workers:
            stop(worker)
        assert len(workers) == 2
        after = {s.id: s for s in Schedules(jobs).list_all(history=False)}
        assert sorted(after) == ["payout-summary", "ride-expiry"], "the removed one stays removed"
        assert after["payout-summary"].paused and after["payout-summary"].spec.cron == "0 3 * * *"
        kept = after["ride-expiry"]
        assert (kept.spec.cron, kept.spec.tz, kept.rev, kept.next) == (
            "0 0 1 1 *",
            "Europe/Paris",
            retimed.rev,
            retimed.next,
        )
        assert sorted(jobs.store.redis.hkeys(marker_key(jobs))) == SHIPPED

        # Made again only when an operator asks for it.
        again = app.test_cli_runner().invoke(args=["jobs", "schedule-reseed", "payment-recheck"])
        assert again.exit_code == 0 and "made again" in again.output, again.output
        assert get_schedule("payment-recheck").spec.cron == "*/5 * * * *"


def test_seeding_from_many_processes_at_once_makes_each_schedule_once(env, sqlite_only):
    with own_app(env) as app:
        jobs = app.extensions["jobs"]
        shipped = shipped_schedules(app.config)
        made: list[list[str]] = []
        gate = threading.Barrier(8)

        def seed() -> None:
            gate.wait()
            made.append(seed_shipped_schedules(jobs, shipped))

        threads = [threading.Thread(target=seed) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(i for ids in made for i in ids) == SHIPPED, made
        assert [s.rev for s in Schedules(jobs).list_all(history=False)] == [1, 1, 1], "each written once"
        assert seed_shipped_schedules(jobs, shipped) == []


def test_payout_summary_emails_each_driver_once_and_a_rerun_sends_none(env, stack, tmp_path):
    sink = stack.services.smtp.handler
    tag = secrets.token_hex(3)
    drivers = {f"drv-{tag}-{i}": f"driver-{tag}-{i}@example.com" for i in range(3)}
    silent = f"drv-{tag}-noaddress"
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime(yesterday.year, yesterday.month, yesterday.day, 12, tzinfo=UTC)
    log = tmp_path / "worker.log"
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        for driver, address in drivers.items():
            request_ride("r-1", driver, "A", "B", driver_email=f"old-{address}")
            request_ride("r-1", driver, "A", "B", driver_email=address)  # the latest address is used
        request_ride("r-1", silent, "A", "B")
        worker = start_worker(env, log, queues="email,analytics", concurrency=4)
        try:
            # Yesterday's completed rides, recorded by the analytics worker (two for the first driver),
            # and one of today, which yesterday's summary leaves out.
            rides = [*drivers, next(iter(drivers)), silent]
            events = [
                {
                    "event": "ride_completed",
                    "eventId": f"{tag}-e{i}",
                    "driverId": driver,
                    "userId": "r-1",
                    "occurredAt": (noon + timedelta(minutes=i)).isoformat(),
                    "data": {"fare": "12.50", "distance": 4.0, "duration": 900},
                }
                for i, driver in enumerate(rides)
            ]
            events.append({**events[0], "eventId": f"{tag}-today", "occurredAt": datetime.now(UTC).isoformat()})
            added = get_queue("analytics").add_bulk(events)
            wait_for_jobs(store, [job.id for job in added], ("completed",), 20, [log])

            # The shipped schedule, ticking every second for the test: each tick summarises the day before
            # its own, so every tick today is a rerun of yesterday's.
            shipped = get_schedule("payout-summary")
            upsert_schedule("payout-summary", every_ms=1000, job={"queue": "analytics", "data": shipped.data})
            assert eventually(lambda: len(get_schedule("payout-summary").last_job_ids) >= 3, timeout=8)
            pause_schedule("payout-summary")
            ticks = get_schedule("payout-summary").last_job_ids
            runs = wait_for_jobs(store, ticks, ("completed", "failed"), 20, [log])
            expected = sorted(payout_email_job_id(yesterday, d) for d in drivers)
            for run in runs:
                assert run.state == "completed", run.failed_reason
                assert run.result["day"] == yesterday.isoformat()
                assert sorted(run.result["emailJobIds"]) == expected
                assert silent in run.result["driversWithoutEmail"]
            wait_for_jobs(store, expected, ("completed",), 20, [log])
            # An operator's run of the same day, by hand: still nothing new.
            rerun = run_job(
                "analytics",
                {"event": "payout_summary", "eventId": "payout-summary", "day": yesterday.isoformat()},
                logs=[log],
            )
            assert sorted(rerun["emailJobIds"]) == expected
            first_email = get_job(payout_email_job_id(yesterday, next(iter(drivers))))
        finally:
            stop(worker)
    for driver, address in drivers.items():
        got = sink.messages_to(address)
        assert len(got) == 1, (address, len(got))
        assert got[0].message["Subject"] == f"Your payout summary for {yesterday.isoformat()}"
        body = got[0].message.get_payload(decode=True).decode()
        rides_of = 2 if driver == next(iter(drivers)) else 1
        assert f"rides: {rides_of}" in body and f"fares: {Decimal('12.50') * rides_of}" in body, body
        assert sink.messages_to(f"old-{address}") == []
    assert first_email.data["to"] == drivers[next(iter(drivers))]
    assert "To date: 3 rides" in first_email.data["text"], "driver_stats counts today's ride too"


def test_ride_expiry_expires_a_stale_requested_ride_with_its_payment_and_not_a_fresh_one(env, stack, tmp_path):
    log = tmp_path / "worker.log"
    with own_app(env):
        stale = request_ride("42", "d-exp", "A", "B").id
        fresh = request_ride("42", "d-exp", "A", "B").id
        # A payment of the stale ride, its charge job waiting a minute: the expiry cancels both.
        payment, job = create_payment(
            user_id="42",
            ride_id=stale,
            amount=Decimal("9.00"),
            currency="usd",
            payment_method="pm_card_visa",
            delay=60_000,
        )
        with get_db().session() as session:
            session.execute(update(Ride).where(Ride.id == stale).values(created_at=LONG_AGO))
        worker = start_worker(env, log, queues="analytics,payment", concurrency=2)
        try:
            result = run_job("analytics", {"event": "expire_rides", "eventId": "expire-rides"}, logs=[log])
            again = run_job("analytics", {"event": "expire_rides", "eventId": "expire-rides"}, logs=[log])
        finally:
            stop(worker)
        assert stale in result["expired"] and fresh not in result["expired"], result
        assert stale not in again["expired"], "expired once"
        with get_db().session() as session:
            assert session.get(Ride, stale).status == "expired"
            assert session.get(Ride, fresh).status == "requested"
        row = payment_row(payment.id)
        assert (row.status, row.failure_reason) == (
            "cancelled",
            f"ride {stale} expired: not accepted within {FAR_MINUTES} minutes",
        )
        assert get_queue("payment").get_job(job.id).state == "cancelled"
        assert intents_for(stack, payment.id) == []
        # An expired ride takes no payment.
        with pytest.raises(LookupError):
            create_payment(
                user_id="42", ride_id=stale, amount=Decimal("1.00"), currency="usd", payment_method="pm_card_visa"
            )


def test_payment_recheck_settles_stale_payments_by_asking_stripe(env, stack, tmp_path):
    log = tmp_path / "worker.log"
    sink = stack.services.smtp.handler
    receipt_to = f"rider-{secrets.token_hex(3)}@example.com"
    with own_app(env) as app:
        queue = get_queue("payment")

        def pending(**options) -> tuple[int, str]:
            # A ride each: a ride's payment jobs are a group, run in the order added.
            ride = request_ride("42", "d-rc", "A", "B").id
            payment, job = create_payment(
                user_id="42",
                ride_id=ride,
                amount=Decimal("7.00"),
                currency="usd",
                payment_method="pm_card_visa",
                delay=600_000,
                **options,
            )
            return payment.id, job.id

        charged, charged_job = pending(receipt_email=receipt_to)  # charged at Stripe, then its job was lost
        unstarted, unstarted_job = pending()  # never got an intent, its job lost: queued again
        gap, gap_job = pending()  # its job ended cancelled, the row left pending (a cancel asked, the worker died)
        alive, alive_job = pending()  # its job is still delayed: left to it
        fresh, fresh_job = pending()  # lost its job, but not stale yet

        with app.test_request_context():
            intent = gateway.create_intent(
                amount_minor=700,
                currency="usd",
                payment_method="pm_card_visa",
                idempotency_key=payment_row(charged).idempotency_key,
                metadata={"payment_id": str(charged)},
            )
            assert gateway.confirm_intent(intent.id, idempotency_key=f"{intent.id}-confirm").status == "succeeded"
        with get_db().session() as session:
            session.execute(
                update(Payment)
                .where(Payment.id == charged)
                .values(status="processing", stripe_payment_intent_id=intent.id, owner_token=1, attempts=1)
            )
            session.execute(
                update(Payment).where(Payment.id.in_([charged, unstarted, gap, alive])).values(updated_at=LONG_AGO)
            )
        for job_id in (charged_job, unstarted_job, fresh_job):
            assert queue.delete(job_id) == "deleted"
        # The gap: the job's cancel is recorded, its payment is not (no on_cancel hook ran).
        assert queue.store.cancel(gap_job, "payment", "cancelled while its worker died") == "cancelled"

        worker = start_worker(env, log, queues="payment,email", concurrency=2)
        try:
            result = run_job("payment", {"action": "reconcile"}, logs=[log])
            wait_for_jobs(queue.store, [unstarted_job], ("completed",), 20, [log])
            again = run_job("payment", {"action": "reconcile"}, logs=[log])
            with get_db().session() as session:
                receipt = session.get(Payment, charged).receipt
                receipt_intent = receipt.stripe_payment_intent_id if receipt else None
            eventually(lambda: sink.messages_to(receipt_to), timeout=10)
        finally:
            stop(worker)
        outcomes = result["payments"]
        assert outcomes[str(charged)] == "succeeded"
        assert outcomes[str(unstarted)] == "requeued"
        assert outcomes[str(gap)] == "cancelled"
        assert outcomes[str(alive)] == "left: its job is delayed"
        assert str(fresh) not in outcomes
        assert str(charged) not in again["payments"] and str(gap) not in again["payments"]
        assert again["payments"].get(str(unstarted)) is None, "charged by its job, not stale any more"

        rows = {pid: payment_row(pid) for pid in (charged, unstarted, gap, alive, fresh)}
        assert {pid: row.status for pid, row in rows.items()} == {
            charged: "succeeded",
            unstarted: "succeeded",
            gap: "cancelled",
            alive: "pending",
            fresh: "pending",
        }
        assert receipt_intent == intent.id
        assert len(sink.messages_to(receipt_to)) == 1
        # Never charged twice: one intent each, the found one not confirmed again.
        assert [(pi.id, pi.status) for pi in intents_for(stack, charged)] == [(intent.id, "succeeded")]
        assert [pi.status for pi in intents_for(stack, unstarted)] == ["succeeded"]
        assert intents_for(stack, gap) == []
        assert rows[gap].failure_reason == "cancelled while its worker died"
