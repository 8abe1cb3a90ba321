"""A queue's global concurrency limit (issue 15), held by three real workers together.

Each worker offers 8 threads, 24 slots in all, but the queue's limit is 5: fetch.lua
counts the queue's active jobs for all workers at once. Each email job waits 0.3 s at
the SMTP sink. What ran at once is read three ways: replayed from the queue's event
stream (every move, in the order the store made it: exact), by sampling the store's
active set every 20 ms, and from the job records' taken and finished times.
"""

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.processes import stop
from jobqueue.limits import Limits
from jobqueue.store import JobRecord, JobStore
from rideshare.jobs import add_email_job, get_queue
from tests.conftest import own_app, wait_for_jobs
from tests.support.flow import most_active, most_at_once, start_workers
from tests.support.smtp import ScriptedHandler

# The job store's moves, through real workers: they never touch SQL, so once, on SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sqlite_only")]

LIMIT = 5
JOB_S = 0.3
# A job's taken and finished times are stamped by two processes, each before its script
# reaches Redis: one worker's finish stamped a ms after another's fetch may still have
# run first (the event stream shows the order). Overlaps shorter than this are not counted.
STAMP_SKEW_MS = 20


@dataclass
class ActiveSampler:
    """Samples the queue's active count every 20 ms in a thread: (time, count) pairs."""

    store: JobStore
    queue: str
    samples: list[tuple[float, int]] = field(default_factory=list)
    running: bool = True

    def __post_init__(self) -> None:
        self.key = self.store.keys.queue(self.queue, "active")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.running:
            self.samples.append((time.time(), self.store.redis.zcard(self.key)))
            time.sleep(0.02)

    def __enter__(self) -> "ActiveSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()

    def most(self, since: float = 0) -> int:
        return max(count for at, count in self.samples if at >= since)


@dataclass
class Workers:
    """The running workers' job store, logs and SMTP sink."""

    store: JobStore
    logs: list[Path]
    tag: str
    smtp: ScriptedHandler

    def add(self, count: int) -> list[JobRecord]:
        """count email jobs, each JOB_S at the SMTP sink."""
        jobs = []
        for _ in range(count):
            data = {"to": f"{self.tag}-{secrets.token_hex(4)}@example.com", "subject": "s", "text": "t"}
            self.smtp.plan(data["to"], ("stall", JOB_S))
            jobs.append(add_email_job(data))
        return jobs

    def wait(self, jobs: list[JobRecord], timeout: float = 60) -> list[JobRecord]:
        return wait_for_jobs(self.store, [job.id for job in jobs], ("completed", "failed"), timeout, self.logs)


@pytest.fixture
def workers(stack, own_queues_env, tmp_path) -> Iterator[Workers]:
    """Three email workers (threads, 8 each) on queues of this test's own, the limit set first."""
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"conc{secrets.token_hex(3)}", "JOB_KEEP_COMPLETED": "10000"}
    with own_app(env) as app:
        get_queue("email").flow.set(Limits(concurrency=LIMIT))
        names = ["w1", "w2", "w3"]
        procs = start_workers(env, tmp_path, names, queues="email", pool="threads", concurrency=8)
        try:
            logs = [tmp_path / f"{name}.log" for name in names]
            yield Workers(app.extensions["jobs"].store, logs, env["JOB_KEY_PREFIX"], stack.services.smtp.handler)
        finally:
            for proc in procs:
                stop(proc)


def spans(jobs: list[JobRecord]) -> list[tuple[int, int]]:
    """Each job's (taken, finished) times, its end brought STAMP_SKEW_MS forward."""
    return [(job.processed_on, job.finished_at - STAMP_SKEW_MS) for job in jobs]


def test_three_workers_with_24_slots_run_at_most_5_jobs_at_once(workers):
    count = 60
    with ActiveSampler(workers.store, "email") as sampler:
        jobs = workers.wait(workers.add(count))
    overlap = most_at_once(spans(jobs))
    exact = most_active(workers.store, "email")
    took = (max(j.finished_at for j in jobs) - min(j.processed_on for j in jobs)) / 1000
    by_worker = {name: sum(j.worker.startswith(f"{name}-") for j in jobs) for name in ("w1", "w2", "w3")}
    print(
        f"\nconcurrency {LIMIT}, 3 workers x 8 threads: most jobs at once {exact} (event stream),"
        f" {sampler.most()} (active set, {len(sampler.samples)} samples every 20 ms),"
        f" {overlap} (job records, overlaps under {STAMP_SKEW_MS} ms not counted);"
        f" {count} jobs of {JOB_S} s in {took:.1f} s (the limit allows {count * JOB_S / LIMIT:.1f} s); {by_worker}"
    )
    assert [j.state for j in jobs] == ["completed"] * count
    assert [j.attempts for j in jobs] == [1] * count
    # Never more than the limit, and the limit was reached: the 24 slots were not the bound.
    assert exact == LIMIT
    assert sampler.most() == LIMIT
    assert overlap == LIMIT, sorted(spans(jobs))
    assert all(by_worker.values()), by_worker


def test_a_concurrency_changed_at_run_time_applies_to_the_next_fetch(workers):
    lower = 2
    count = 50
    with ActiveSampler(workers.store, "email") as sampler:
        jobs = workers.add(count)
        while workers.store.counts("email")["completed"] < 15:
            time.sleep(0.02)
        get_queue("email").flow.set(Limits(concurrency=lower))
        changed = time.time()
        jobs = workers.wait(jobs)
    # Taken after the change: fetched under the new limit. Jobs running at the change
    # end within a job's time; from then on the queue holds the new limit.
    after = [span for span in spans(jobs) if span[0] >= changed * 1000]
    before = [span for span in spans(jobs) if span[0] < changed * 1000]
    settled = changed + JOB_S + 0.2
    exact = most_active(workers.store, "email", since_ms=int(settled * 1000))
    print(
        f"\nconcurrency {LIMIT} -> {lower} at run time: most at once before {most_at_once(before)};"
        f" among the {len(after)} jobs taken after {most_at_once(after)};"
        f" from {settled - changed:.1f} s after: {exact} (event stream), {sampler.most(settled)} (active set)"
    )
    assert [j.state for j in jobs] == ["completed"] * count
    assert most_at_once(before) == LIMIT
    assert len(after) >= 20
    assert most_at_once(after) == lower
    assert exact == lower
    assert sampler.most(settled) == lower
