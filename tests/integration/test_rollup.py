"""A day's roll-up, debounced: a burst of ride completions through the API makes one roll-up job,
which runs once the burst is over and whose totals match the day's events.

A worker of the test's own (own_queues_env, its own JOB_KEY_PREFIX) takes the analytics
queue, so only this burst's jobs are in its store; the SQL database is the session's.
"""

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from devstack.processes import stop
from rideshare.analytics.models import AnalyticsEvent, DailyRollup
from rideshare.analytics.service import RIDE_COMPLETED, ROLLUP_DELAY_MS, ROLLUP_MAX_HOLD_MS, stage_daily_rollup
from rideshare.auth import issue_token
from rideshare.db import get_db
from rideshare.jobs.outbox import JOB_OUTBOX
from rideshare.rides.models import Ride
from tests.conftest import own_app, start_worker, wait_for_jobs

pytestmark = pytest.mark.integration

BURST = 100
CLIENTS = 4


def day_totals(day) -> dict:
    """The day's ride_completed events summed here, row by row (not by the roll-up's query)."""
    start = datetime.combine(day, day_time.min, tzinfo=UTC)
    with get_db().session() as session:
        events = session.scalars(
            select(AnalyticsEvent).where(
                AnalyticsEvent.event == RIDE_COMPLETED,
                AnalyticsEvent.occurred_at >= start,
                AnalyticsEvent.occurred_at < start + timedelta(days=1),
            )
        ).all()
    return {
        "rides": len(events),
        "revenue": sum((e.fare or Decimal("0") for e in events), Decimal("0")),
        "distance_km": sum(e.distance_km or 0.0 for e in events),
        "duration_s": sum(e.duration_s or 0 for e in events),
        "drivers": len({e.driver_id for e in events if e.driver_id is not None}),
        "riders": len({e.user_id for e in events if e.user_id is not None}),
    }


def test_a_burst_of_completions_makes_one_rollup_after_it_matching_the_events(stack, own_queues_env, tmp_path):
    tag = f"ru{secrets.token_hex(3)}"
    env = {**own_queues_env, "JOB_KEY_PREFIX": tag, "JOB_KEEP_COMPLETED": "1000"}
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        worker = start_worker(env, tmp_path / "analytics.log", queues="analytics", concurrency=4, name=f"{tag}@%h")
        try:
            with get_db().session() as session:
                rides = [
                    Ride(rider_id=f"r{i % 7}", driver_id=f"{tag}-d{i % 10}", pickup="A", dropoff="B")
                    for i in range(BURST)
                ]
                session.add_all(rides)
            headers = {"Authorization": f"Bearer {issue_token('admin', 'admin')}"}

            def complete(i: int) -> str:
                ride = rides[i]
                body = {
                    "driverId": ride.driver_id,
                    "fare": f"{10 + i % 13}.{i % 100:02d}",
                    "distance": 1.5 + i,
                    "duration": 60 * (i + 1),
                }
                response = app.test_client().post(f"/rides/{ride.id}/complete", json=body, headers=headers)
                assert response.status_code == 200, response.json
                return response.json["jobId"]

            started = time.time()
            # As the API's request threads would: a few at once.
            with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                event_jobs = list(pool.map(complete, range(BURST - 1)))
            event_jobs.append(complete(BURST - 1))  # the last, so its data is the roll-up's newest
            burst_ms = (time.time() - started) * 1000
            last_done = int(time.time() * 1000)
            day = datetime.now(UTC).date()

            found, _ = store.search("analytics", tags=[f"rollup:{day.isoformat()}"])
            rollup_ids = [job_id for _, job_id in found]
            assert len(rollup_ids) == 1, rollup_ids
            [rollup] = wait_for_jobs(store, rollup_ids, ("completed", "failed"), 30, [tmp_path / "analytics.log"])
            events = wait_for_jobs(store, event_jobs, ("completed", "failed"), 30, [tmp_path / "analytics.log"])
            metrics = store.metrics()
            # Still one: nothing made another after the burst.
            assert [j for _, j in store.search("analytics", tags=[f"rollup:{day.isoformat()}"])[0]] == rollup_ids
        finally:
            stop(worker)

        totals = day_totals(day)
        with get_db().session() as session:
            row = session.get(DailyRollup, day)
    print(
        f"\nroll-up: {BURST} completions in {burst_ms:.0f} ms, 1 roll-up job ({metrics.get('analytics:deduplicated')} "
        f"deduplicated), started {rollup.processed_on - last_done} ms after the last; {totals['rides']} rides today"
    )
    # One roll-up for the whole burst needs it to end before the day's key lapses (about 1 s
    # on PostgreSQL here, 2 s on SQLite, whose writes are one at a time).
    assert burst_ms < ROLLUP_MAX_HOLD_MS, f"the burst took {burst_ms:.0f} ms: not one burst"
    assert {job.state for job in events} == {"completed"}
    assert rollup.state == "completed", rollup.failed_reason
    assert metrics.get("analytics:deduplicated") == BURST - 1
    # Debounced: it holds the newest completion's data, and ran once no completion came for its delay.
    assert rollup.data["after"] == f"ride-completed-{rides[-1].id}"
    assert rollup.processed_on >= last_done + ROLLUP_DELAY_MS - 200
    assert rollup.attempts == 1

    # Its totals are the day's events, this burst among them.
    assert totals["rides"] >= BURST
    assert (row.rides, row.revenue, row.duration_s, row.drivers, row.riders) == (
        totals["rides"],
        totals["revenue"],
        totals["duration_s"],
        totals["drivers"],
        totals["riders"],
    )
    assert row.distance_km == pytest.approx(totals["distance_km"])
    assert rollup.result["rides"] == row.rides and Decimal(rollup.result["revenue"]) == row.revenue


def test_rollups_left_in_the_outbox_are_still_one_when_the_relay_queues_them(stack, own_queues_env):
    """Completions whose process died before publishing: the relay adds their staged roll-ups, and the
    day's key still folds them into one job (a past day, so no completion of today's joins in)."""
    day = date(2020, 2, 29)
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"ru{secrets.token_hex(3)}"}
    with own_app(env, JOB_OUTBOX_SETTLE_MS=0) as app:
        store = app.extensions["jobs"].store
        staged = []
        for n in range(3):
            with get_db().session() as session:
                staged.append(stage_daily_rollup(session, day, f"ride-completed-relay-{n}"))
            time.sleep(0.005)  # staged in this order, which the relay keeps
        assert app.extensions["outbox"].relay() >= 3
        found = [job_id for _, job_id in store.search("analytics", tags=[f"rollup:{day.isoformat()}"])[0]]
        metrics = store.metrics()
        [job] = store.get_many(found)
        with get_db().session() as session:
            left = session.scalar(
                select(func.count()).select_from(JOB_OUTBOX).where(JOB_OUTBOX.c.job_id.in_([s.job_id for s in staged]))
            )
    assert found == [staged[0].job_id]
    assert metrics.get("analytics:deduplicated") == 2
    # Debounced through the relay too: the newest data, the delay started again.
    assert (job.state, job.data["after"]) == ("delayed", "ride-completed-relay-2")
    assert left == 0
