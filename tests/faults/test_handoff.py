"""Kills at each point of the broker-to-job hand-off. A message is simply popped from the
broker (no kombu unacked record), so recovery rests on the job store alone:

- taken by a worker and held in its prefetch buffer, never started: the worker's
  claims lapse and the lost-message sweep publishes the job again, within
  JOB_STALE_WAITING_MS plus a claim's life (3 s) and a sweep interval (2 s);
- started, not finished: its lease runs out and the lease sweep delivers it again.
"""

import os
import signal
import time

import pytest
import redis

from jobqueue.transport import RedisMessages
from rideshare.jobs import add_email_job
from tests.conftest import eventually
from tests.faults.conftest import children

pytestmark = pytest.mark.faults

PREFETCHED = 8


def test_a_worker_killed_with_messages_in_its_prefetch_buffer_loses_none(rig):
    broker = redis.Redis.from_url(rig.env["REDIS_URL"])
    smtp = rig.services.smtp.handler
    prefix = rig.env["JOB_KEY_PREFIX"]
    stale_s = int(rig.env["JOB_STALE_WAITING_MS"]) / 1000
    with rig.app.app_context():
        # One process, eight messages prefetched: one job runs (a slow SMTP server), seven wait in the buffer.
        holder = rig.worker("email", concurrency=1, CELERY_PREFETCH_MULTIPLIER=str(PREFETCHED))
        jobs = []
        for i in range(PREFETCHED + 2):
            data = {"to": f"handoff-{i}-{prefix}@example.com", "subject": "s", "text": "t"}
            smtp.plan(data["to"], ("stall", 3.0))
            jobs.append(add_email_job(data, timeout=5000))
        assert eventually(lambda: broker.llen("email") <= 2 and rig.store.counts("email")["active"] == 1, timeout=20)
        in_broker = {i for raw in broker.lrange("email", 0, -1) for i in RedisMessages.job_ids(raw.decode())}
        active = {j.id for j in rig.store.get_many([j.id for j in jobs]) if j.state == "active"}
        taken = {j.id for j in jobs} - in_broker - active  # popped by the worker, waiting in its buffer
        for pid in [*children(holder.pid), holder.pid]:
            os.kill(pid, signal.SIGKILL)
        holder.wait(10)
        killed_at = time.time() * 1000
        rig.worker("email", concurrency=4)
        final = rig.wait_all([j.id for j in jobs], timeout=60)
    metrics = rig.store.metrics()
    buffered = [j for j in final if j.id in taken and j.attempts == 1]
    waits = sorted(round((j.processed_on - killed_at) / 1000, 1) for j in buffered)
    lost = metrics.get("email:lost_message")
    print(f"\nhand-off: buffered={len(buffered)} lost_message={lost} starts after the kill (s)={waits}")
    assert {j.state for j in final} == {"completed"}
    # Every job that never started in the killed worker ran once, sent once.
    never_started = [j for j in final if j.attempts == 1]
    assert [len(smtp.messages_to(j.data["to"])) for j in never_started] == [1] * len(never_started)
    assert len(taken) >= PREFETCHED - 2, taken
    assert len(buffered) == len(taken)
    assert metrics.get("email:lost_message", 0) >= len(taken)
    assert max(waits) <= stale_s + 3 + 2 + 3, waits  # the bound, plus a second of slack each side
