"""Redis memory: an evicting policy is reported, and a full Redis still drains.

A test-owned redis-server with maxmemory 20mb. Under noeviction the API refuses
new jobs (503) once Redis is past JOB_STORE_MAX_MEMORY_SHARE of it, which keeps
room for a worker started only after the refusals to drain every accepted job,
each exactly once, with no operator step. Any other policy is an ERROR line at
start-up and a failing /readyz check, unless REDIS_ALLOW_EVICTION=true.
"""

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from devstack.processes import free_port, redis_server_binary, stop, wait_for_port
from devstack.run import redis_eviction_risk
from jobqueue.memory import MemoryGuard, MemoryReading, eviction_risk
from rideshare.db import get_db
from rideshare.mail.models import EmailDelivery
from tests.conftest import own_app, start_worker

pytestmark = pytest.mark.integration
MAXMEMORY = 20 * 1024 * 1024
SHARE = 0.9


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[str]:
    """redis-server --maxmemory 20mb --maxmemory-policy noeviction on a free port; its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path),
            "--save", "", "--appendonly", "no",
            "--maxmemory", "20mb", "--maxmemory-policy", "noeviction",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@pytest.fixture
def small_env(stack, small_redis: str) -> dict[str, str]:
    """The stack's settings (its SQL database and SMTP server) on the small Redis, broker included."""
    return {**stack.env, "REDIS_URL": small_redis, "BROKER_URL": "", "JOB_STORE_MAX_MEMORY_SHARE": str(SHARE)}


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def fill_with_ballast(client: redis.Redis, share: float) -> None:
    """Other data in the same Redis, up to share of maxmemory, so the API fills the rest quickly."""
    index = 0
    while used(client) < share * MAXMEMORY:
        with client.pipeline(transaction=False) as pipe:
            for _ in range(100):
                pipe.set(f"ballast:{index}", b"x" * 1000)
                index += 1
            pipe.execute()


def test_the_guard_reads_redis_at_most_once_a_second():
    class Counting:
        calls = 0

        def info(self, section: str) -> dict[str, object]:
            Counting.calls += 1
            return {"used_memory": 95, "maxmemory": 100, "maxmemory_policy": "noeviction"}

    now = [0.0]
    guard = MemoryGuard(Counting(), 0.9, clock=lambda: now[0])
    for _ in range(1000):
        with pytest.raises(Exception, match="95% of maxmemory"):
            guard()
    assert Counting.calls == 1
    now[0] = 1.5
    with pytest.raises(Exception, match="past the 90%"):
        guard()
    assert Counting.calls == 2
    assert MemoryReading(5, 0, "noeviction").share == 0.0  # no maxmemory: never refused


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random", "volatile-ttl", "allkeys-lfu"])
def test_every_evicting_policy_names_the_risk(policy):
    risk = eviction_risk(policy)
    assert policy in risk and "accepted jobs" in risk and "noeviction" in risk and "REDIS_ALLOW_EVICTION" in risk
    assert eviction_risk("noeviction") is None


def test_an_evicting_redis_is_an_error_at_start_up_and_fails_readyz(small_env, small_redis, caplog):
    client = redis.Redis.from_url(small_redis)
    client.config_set("maxmemory-policy", "allkeys-lru")
    caplog.clear()
    with own_app(small_env) as app:
        response = app.test_client().get("/readyz")
    [error] = [r for r in caplog.records if r.getMessage() == "redis.eviction_policy"]
    assert error.levelname == "ERROR" and error.policy == "allkeys-lru" and "accepted jobs" in error.risk
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "ok"
    assert response.json["checks"]["redis"].startswith("Redis maxmemory-policy is allkeys-lru")
    assert "accepted jobs can vanish" in response.json["checks"]["redis"]
    # run-stack.sh says it too, before it starts anything else.
    assert "allkeys-lru" in redis_eviction_risk(small_env)

    with own_app({**small_env, "REDIS_ALLOW_EVICTION": "true"}) as app:
        allowed = app.test_client().get("/readyz")
    assert allowed.status_code == 200, allowed.json
    assert redis_eviction_risk({**small_env, "REDIS_ALLOW_EVICTION": "true"}) is None
    client.close()


def test_an_evicting_redis_is_an_error_when_a_worker_starts(small_env, small_redis, tmp_path):
    client = redis.Redis.from_url(small_redis)
    client.config_set("maxmemory-policy", "volatile-lru")
    log = tmp_path / "worker.log"
    worker = start_worker(small_env, log, queues="email", concurrency=1, pool="threads")
    stop(worker)
    assert '"event": "redis.eviction_policy"' in log.read_text()
    assert '"policy": "volatile-lru"' in log.read_text()
    client.close()


def test_a_full_redis_refuses_new_jobs_and_a_worker_started_afterwards_drains_it(
    small_env, small_redis, stack, tmp_path
):
    client = redis.Redis.from_url(small_redis)
    smtp = stack.services.smtp.handler
    with own_app(small_env) as app:
        fill_with_ballast(client, SHARE - 0.06)
        api = app.test_client()
        run = secrets.token_hex(3)
        accepted: dict[str, str] = {}  # address -> job id
        refused: list[str] = []
        index = 0
        started = time.monotonic()
        while len(refused) < 20:
            address = f"full-{run}-{index}@example.com"
            index += 1
            response = api.post("/send-welcome-email", json={"email": address, "name": "Ann"})
            if response.status_code == 202:
                assert not refused, "a job was accepted after a refusal, within the same second"
                accepted[address] = response.json["jobId"]
            else:
                assert response.status_code == 503, response.get_data(as_text=True)
                assert "nothing was queued" in response.json["message"]
                refused.append(address)
            assert time.monotonic() - started < 60, f"no refusal after {len(accepted)} jobs"
            if refused:
                time.sleep(0.06)  # across a guard reading or two: still refused
        peak = used(client)
        assert peak < MAXMEMORY, "Redis itself reached maxmemory: the guard left no headroom"
        print(f"\nfull redis: {len(accepted)} accepted, {len(refused)} refused at {peak / MAXMEMORY:.1%} of maxmemory")

        # Only now a worker: it must start on this Redis and drain it.
        log = tmp_path / "worker.log"
        worker = start_worker(small_env, log, queues="email", concurrency=8, pool="threads")
        try:
            deadline = time.monotonic() + 90
            while any(not smtp.messages_to(a) for a in accepted):
                peak = max(peak, used(client))
                assert worker.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"undelivered after 90 s\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
            time.sleep(1.5)  # a duplicate would land within this
        finally:
            stop(worker)
        delivered = {a: len(smtp.messages_to(a)) for a in accepted}
        with get_db().session() as session:
            rows = session.scalars(select(EmailDelivery).where(EmailDelivery.job_id.in_(accepted.values()))).all()
    ran_once = sum(1 for count in delivered.values() if count == 1)
    print(f"full redis: {ran_once} of {len(accepted)} accepted jobs ran exactly once; peak {peak / MAXMEMORY:.1%}")
    assert delivered == {a: 1 for a in accepted}
    assert {r.job_id: (r.status, r.attempts) for r in rows} == {j: ("sent", 1) for j in accepted.values()}
    assert all(not smtp.messages_to(a) for a in refused)
    text = log.read_text()
    assert "OutOfMemoryError" not in text and "OOM command not allowed" not in text
    assert used(client) < MAXMEMORY
    client.close()


def test_an_evicting_redis_refuses_new_jobs_on_every_path_unless_allowed(small_env, small_redis):
    """Once the store is the only queue, an evicted sorted set loses every job in it: adding
    fails closed (QueueUnavailable, 503) on add, add_bulk and the outbox relay."""
    from jobqueue import QueueUnavailable
    from rideshare.jobs import add_analytics_jobs, add_email_job, get_queue, stage_job

    client = redis.Redis.from_url(small_redis)
    client.config_set("maxmemory-policy", "allkeys-lru")
    email = {"to": "evict@example.com", "subject": "s", "text": "t"}
    event = {"event": "ride_completed", "eventId": f"evt-{secrets.token_hex(4)}"}
    with own_app({**small_env, "JOB_OUTBOX_SETTLE_MS": "0"}) as app:
        with pytest.raises(QueueUnavailable, match="allkeys-lru"):
            add_email_job(email)
        with pytest.raises(QueueUnavailable, match="allkeys-lru"):
            add_analytics_jobs([event])
        response = app.test_client().post("/send-welcome-email", json={"email": "ann@example.com", "name": "Ann"})
        assert response.status_code == 503, response.get_data(as_text=True)
        outbox = app.extensions["outbox"]
        with get_db().session() as session:
            stage_job(session, "email", email, job_id=f"evict-{secrets.token_hex(4)}")
        time.sleep(0.01)
        assert outbox.relay() == 0  # refused: the row stays for a later relay
        assert outbox.pending() == 1
        assert client.keys("{*") == []  # nothing of the job store was written
        assert get_queue("email").get_job_counts()["waiting"] == 0
    with own_app({**small_env, "REDIS_ALLOW_EVICTION": "true", "JOB_OUTBOX_SETTLE_MS": "0"}) as app:
        assert add_email_job(email).state == "waiting"
        assert app.extensions["outbox"].relay() == 1
    client.close()
