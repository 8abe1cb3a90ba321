"""A script call that reached Redis but whose reply was lost (a timeout during a Redis freeze)
is sent again by the client: the job store answers the repeat without a second effect."""

import uuid

import pytest
import redis

from jobqueue.options import JobOptions
from jobqueue.policy import QueuePolicy
from jobqueue.queue import JobQueue
from jobqueue.store import JobStore, Retention, now_ms

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(client, prefix=f"retries-{uuid.uuid4().hex[:6]}")
    yield JobQueue(QueuePolicy(name="q", task="q.run"), store, JobOptions(), (Retention(), Retention()))
    keys = list(client.scan_iter(f"{{{store.prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def fetch(store: JobStore, fetch_id: str, count: int = 2) -> list[str]:
    raw = store._run("fetch", "", "q", [now_ms(), count, "w1", 3, 1000, fetch_id])
    return [dict(zip(fields[0::2], fields[1::2], strict=True))["id"] for fields in raw[1:]]


def test_a_repeated_fetch_returns_the_same_jobs_and_takes_no_more(queue):
    for i in range(5):
        queue.add({"n": i}, job_id=f"j{i}")
    store = queue.store
    first = fetch(store, "f1")
    again = fetch(store, "f1")  # the client's retry of the same call
    assert first == again == ["j0", "j1"]
    assert store.counts("q")["active"] == 2
    assert fetch(store, "f2") == ["j2", "j3"]  # a new fetch takes the next ones
    assert [store.get(i).attempts for i in ("j0", "j1", "j2")] == [1, 1, 1]


def test_a_repeated_finish_is_not_a_stale_one(queue):
    queue.add({"n": 1}, job_id="j1")
    _, [job] = queue.store.fetch("q", 1, "w1", max_stalls=3)
    assert queue.store.finish(job, "complete", score=now_ms()) == "active"
    assert queue.store.finish(job, "complete", score=now_ms()) == "active"  # the retry: answered, no effect
    assert queue.store.metrics().get("q:stale_finish", 0) == 0
    assert queue.store.metrics()["q:completed"] == 1
    assert queue.store.get("j1").state == "completed"
