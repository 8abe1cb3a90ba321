"""Kills at the store-to-pool hand-off. A worker takes a job with one script (fetch.lua) that
leases it under a new token; there is no broker message to lose, so recovery is the lease:

- fetched and handed to the pool, killed before or while it runs: its lease runs out and
  the next fetch, on any worker, takes it again (stall), with a newer token;
- jobs the dead worker never fetched are taken by the next worker at once.
"""

import os
import signal
import time

import pytest

from rideshare.jobs import add_email_job
from tests.conftest import eventually
from tests.faults.conftest import children

pytestmark = pytest.mark.faults

SLOTS = 4
JOBS = 10
TIMEOUT_MS = 3000  # lease: timeout + 5 s grace + 2 s margin = 10 s


def test_a_worker_killed_holding_fetched_jobs_loses_none(rig):
    smtp = rig.services.smtp.handler
    prefix = rig.env["JOB_KEY_PREFIX"]
    with rig.app.app_context():
        holder = rig.worker("email", concurrency=SLOTS, pool="threads")
        jobs = []
        for i in range(JOBS):
            data = {"to": f"handoff-{i}-{prefix}@example.com", "subject": "s", "text": "t"}
            smtp.plan(data["to"], ("stall", 2.0))
            jobs.append(add_email_job(data, timeout=TIMEOUT_MS))
        # The worker fetched as many jobs as it has slots, no more: the rest stay waiting.
        assert eventually(lambda: rig.store.counts("email")["active"] == SLOTS, timeout=20)
        counts = rig.store.counts("email")
        held = {j.id for j in rig.store.get_many([j.id for j in jobs]) if j.state == "active"}
        for pid in [*children(holder.pid), holder.pid]:
            os.kill(pid, signal.SIGKILL)
        holder.wait(10)
        killed_at = time.time() * 1000
        rig.worker("email", concurrency=SLOTS, pool="threads")
        final = rig.wait_all([j.id for j in jobs], timeout=90)
    metrics = rig.store.metrics()
    rerun = [j for j in final if j.id in held]
    waits = sorted(round((j.processed_on - killed_at) / 1000, 1) for j in rerun)
    print(
        f"\nhand-off: held={len(held)} waiting_at_kill={counts['waiting']} stalled={metrics.get('email:stalled')}"
        f" re-taken after the kill (s)={waits}"
    )
    assert counts["waiting"] == JOBS - SLOTS
    assert {j.state for j in final} == {"completed"}
    assert len(held) == SLOTS
    # The held jobs ran again under a new token once their lease ran out, no sooner.
    assert all(j.attempts == 2 and int(j.token) == 2 for j in rerun), [(j.id, j.attempts, j.token) for j in rerun]
    assert metrics.get("email:stalled", 0) >= SLOTS
    assert min(waits) >= 5, waits  # not before the lease ran out (10 s after the fetch)
    assert max(waits) <= 10 + 3, waits
    # Every job the dead worker never held ran once, sent once.
    fresh = [j for j in final if j.id not in held]
    assert [j.attempts for j in fresh] == [1] * len(fresh)
    assert [len(smtp.messages_to(j.data["to"])) for j in fresh] == [1] * len(fresh)
