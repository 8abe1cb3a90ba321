"""Flow control in the job store's scripts, move by move, against a real Redis (no worker).

The proofs under load, with worker processes, are in test_flow_rate.py,
test_flow_concurrency.py, test_flow_groups.py and test_flow_dedup.py; these pin
the rules at the edges: when a rate slot frees, what a group's slot is held
through, what a limit change does to jobs already waiting, and each dedup mode.
"""

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from jobqueue.limits import GroupLimits, InvalidLimits, Limits, Rate
from jobqueue.options import InvalidJobOptions, JobOptions
from jobqueue.policy import QueuePolicy
from jobqueue.queue import JobQueue
from jobqueue.store import JobRecord, JobStore, Retention, now_ms

pytestmark = pytest.mark.integration
Q = "flow"


@pytest.fixture
def queue(redis_url: str) -> Iterator[JobQueue]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(client, prefix=f"flow-{uuid.uuid4().hex[:8]}")
    yield JobQueue(QueuePolicy(name=Q, task="flow.run"), store, JobOptions(attempts=3), (Retention(), Retention()))
    keys = list(client.scan_iter(f"{{{store.prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def take(queue: JobQueue, count: int = 100, worker: str = "w") -> tuple[int, list[JobRecord]]:
    wait, jobs = queue.store.fetch(Q, count, worker, max_stalls=3)
    for job in jobs:
        job.store = queue.store
    return wait, jobs


def end(queue: JobQueue, job: JobRecord, event: str = "complete", delay_ms: int = 0, **kwargs) -> str | None:
    return queue.store.finish(job, event, score=now_ms() + delay_ms, fields={"finishedAt": now_ms()}, **kwargs)


def test_a_rate_slot_is_held_until_the_job_ends_then_for_the_window(queue):
    queue.flow.set(Limits(rate=Rate(2, 400)))
    for i in range(6):
        queue.add({"i": i})
    wait, first = take(queue)
    assert len(first) == 2
    assert 0 < wait <= 400, "the fetch says when the next slot frees, not the idle maximum"
    time.sleep(0.5)
    # The window has passed, but both jobs still run: their slots are still used.
    assert take(queue)[1] == []
    end(queue, first[0])
    assert take(queue)[1] == [], "a slot frees a window after its job ends"
    time.sleep(0.45)
    _, second = take(queue)
    assert len(second) == 1
    assert all(j.attempts == 1 for j in first + second), "a job over the limit spends no attempt"
    status = queue.flow.status()
    assert status["limited"] and status["limitedBy"] == ["rate"]
    assert status["waitingOnLimit"] == 3 and status["rateUsed"] == 2


def test_concurrency_counts_every_worker_and_a_change_applies_to_the_next_fetch(queue):
    queue.flow.set(Limits(concurrency=3))
    for i in range(8):
        queue.add({"i": i})
    assert len(take(queue, 10, "w1")[1]) == 3
    assert take(queue, 10, "w2")[1] == [], "the limit is the queue's, not each worker's"
    queue.flow.set(queue.flow.get().changed({"concurrency": 5}))
    assert len(take(queue, 10, "w2")[1]) == 2
    queue.flow.set(queue.flow.get().changed({"concurrency": None}))
    assert len(take(queue, 10, "w3")[1]) == 3


def test_a_throttle_stops_the_queue_and_a_rate_limited_job_keeps_its_attempt(queue):
    job = queue.add({"i": 1})
    queue.add({"i": 2})
    _, (running,) = take(queue, 1)
    assert end(queue, running, "rate_limit", throttle_ms=600) == "active"
    again = queue.get_job(job.id)
    assert again.state == "waiting" and again.attempts == 0
    wait, jobs = take(queue)
    assert jobs == [] and 400 < wait <= 600
    assert queue.flow.status()["throttledMs"] > 0
    time.sleep(0.65)
    assert len(take(queue)[1]) == 2
    assert queue.store.metrics()[f"{Q}:rate_limited"] == 1


def test_a_group_runs_in_the_order_added_and_holds_its_slot_through_retries(queue):
    a1, a2, a3 = (queue.add({"n": n}, group="ride:1") for n in (1, 2, 3))
    b1 = queue.add({"n": 1}, group="ride:2")
    assert [a1.state, a2.state, a3.state, b1.state] == ["waiting", "grouped", "grouped", "waiting"]
    _, jobs = take(queue)
    assert {j.id for j in jobs} == {a1.id, b1.id}
    running = {j.id: j for j in jobs}
    # a1 fails and is retried after a backoff: ride:1 keeps its slot, so a2 still waits.
    assert end(queue, running[a1.id], "retry", delay_ms=0) == "active"
    assert queue.get_job(a2.id).state == "grouped"
    _, again = take(queue)
    assert [j.id for j in again] == [a1.id]
    end(queue, again[0], "fail")
    # Failed for good: the group moves on to its next job.
    assert queue.get_job(a2.id).state == "waiting"
    status = queue.flow.status()
    assert status["groups"] == [{"group": "ride:1", "backlog": 1, "running": 1}]
    # An operator's retry of the failed job puts it first in its group's line again.
    assert queue.retry(a1.id) == "grouped"
    _, (nxt,) = take(queue)
    assert nxt.id == a2.id
    end(queue, nxt)
    _, (nxt,) = take(queue)
    assert nxt.id == a1.id, "the retried job goes before a3, which was added after it"


def test_cancelling_or_expiring_a_held_job_keeps_the_line_and_a_cancelled_head_frees_it(queue):
    a1 = queue.add({"n": 1}, group="g")
    a2 = queue.add({"n": 2}, group="g")
    a3 = queue.add({"n": 3}, group="g", expires=200)
    assert queue.cancel(a2.id, "not needed") == "cancelled"
    time.sleep(0.25)
    take(queue, 0)  # the fetch ends expired jobs
    assert queue.get_job(a3.id).state == "expired"
    a4 = queue.add({"n": 4}, group="g")
    assert queue.cancel(a1.id, "changed plans") == "cancelled"
    assert queue.get_job(a4.id).state == "waiting", "cancelling the group's waiting head lets the next go"
    assert queue.flow.status()["groups"] == []


def test_group_concurrency_and_rate_are_per_group_and_raising_them_releases_at_once(queue):
    for n in range(4):
        queue.add({"n": n}, group="busy")
    assert len(take(queue)[1]) == 1
    queue.flow.set_group("busy", GroupLimits(concurrency=3))
    assert len(take(queue)[1]) == 2, "raising a group's concurrency lets its next jobs go at once"
    assert queue.flow.get_group("busy").concurrency == 3
    # A group rate: at most 2 of its jobs go per 300 ms, even with slots free.
    queue.flow.set_group("paced", GroupLimits(concurrency=10, rate=Rate(2, 300)))
    for n in range(5):
        queue.add({"n": n}, group="paced")
    wait, jobs = take(queue)
    assert len(jobs) == 2 and wait <= 300
    for job in jobs:
        end(queue, job)
    assert take(queue)[1] == []
    time.sleep(0.35)
    assert len(take(queue)[1]) == 2, "the group's turn falls due with its window (K.gdue), no add needed"


def test_deduplication_modes(queue):
    simple = {"id": "pay:1", "mode": "simple"}
    first = queue.add({"v": 1}, deduplicate=simple)
    assert queue.add({"v": 2}, deduplicate=simple).id == first.id
    _, (running,) = take(queue)
    assert queue.add({"v": 3}, deduplicate=simple).id == first.id, "held while it runs"
    end(queue, running)
    assert queue.add({"v": 4}, deduplicate=simple).id != first.id, "freed once its job is final"

    throttle = {"id": "t", "mode": "throttle", "ttl": 300}
    kept = queue.add({"v": 1}, deduplicate=throttle)
    queue.delete(kept.id)
    assert queue.add({"v": 2}, deduplicate=throttle).id == kept.id, "the window holds, whatever its job became"
    time.sleep(0.35)
    assert queue.add({"v": 3}, deduplicate=throttle).id != kept.id

    debounce = {"id": "rollup", "mode": "debounce", "ttl": 5000}
    d1 = queue.add({"v": 1}, delay=300, deduplicate=debounce)
    due_before = queue.store.redis.zscore(queue.store.keys.queue(Q, "delayed"), d1.id)
    time.sleep(0.1)
    d2 = queue.add({"v": 2}, delay=300, deduplicate=debounce)
    assert d2.id == d1.id and queue.get_job(d1.id).data == {"v": 2}
    assert queue.store.redis.zscore(queue.store.keys.queue(Q, "delayed"), d1.id) > due_before, "its delay restarts"

    last = {"id": "sync:7", "mode": "keep_last_if_active"}
    k1 = queue.add({"v": 1}, deduplicate=last)
    assert queue.add({"v": 2}, deduplicate=last).id == k1.id and queue.get_job(k1.id).data == {"v": 2}
    _, jobs = take(queue)
    running = next(j for j in jobs if j.id == k1.id)
    follow = queue.add({"v": 3}, deduplicate=last)
    assert follow.id != k1.id and follow.state == "grouped", "one follow-up, behind the running job"
    assert queue.add({"v": 4}, deduplicate=last).id == follow.id
    assert queue.get_job(follow.id).data == {"v": 4}
    end(queue, running)
    assert queue.get_job(follow.id).state == "waiting"
    assert queue.store.metrics()[f"{Q}:deduplicated"] == 6


def test_bad_options_and_limits_name_each_field(queue):
    with pytest.raises(InvalidJobOptions) as bad:
        queue.add({"v": 1}, group="", deduplicate={"id": "x", "mode": "debounce"})
    assert set(bad.value.errors) == {"group", "deduplicate"}
    with pytest.raises(InvalidLimits) as bad:
        Limits().changed({"rate": {"max": 0, "perMs": 1000}, "concurrency": -1, "group": {"concurrency": "2"}, "x": 1})
    assert set(bad.value.errors) == {"rate", "concurrency", "group.concurrency", "x"}
    assert Limits().changed({"rate": "25/s"}).rate == Rate(25, 1000)
    assert Limits.from_env("payment", {"PAYMENT_RATE_LIMIT": "600/min", "PAYMENT_CONCURRENCY_LIMIT": "20"}) == Limits(
        rate=Rate(600, 60_000), concurrency=20
    )
    with pytest.raises(InvalidLimits) as bad:
        Limits.from_env("payment", {"PAYMENT_RATE_LIMIT": "fast", "PAYMENT_CONCURRENCY_LIMIT": "many"})
    assert set(bad.value.errors) == {"PAYMENT_RATE_LIMIT", "PAYMENT_CONCURRENCY_LIMIT"}


def test_the_environment_seeds_limits_until_an_operator_sets_them(queue):
    assert queue.flow.seed(Limits(rate=Rate(25, 1000)))
    assert queue.flow.get().rate == Rate(25, 1000) and queue.flow.set_by() == "env"
    queue.flow.set(Limits(rate=Rate(5, 1000)))
    assert not queue.flow.seed(Limits(rate=Rate(50, 1000))), "an operator's change outlives a restart"
    assert queue.flow.get().rate == Rate(5, 1000)
