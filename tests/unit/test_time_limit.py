"""time_limit: the job timeout in the main thread (SIGALRM) and in pool threads (the watchdog)."""

import threading
import time
from types import SimpleNamespace

import pytest

from rideshare.celery_app import worker_parallelism
from rideshare.jobs.task import JobTimeout, job_time_left, time_limit


def busy(seconds: float) -> None:
    """Python work (not a single blocking call), so an asynchronous exception can land."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(100))


def in_thread(target) -> BaseException | None:
    """Run target in a new thread; the exception it raised, if any."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return raised[0] if raised else None


def test_main_thread_job_past_its_timeout_raises():
    started = time.monotonic()
    with pytest.raises(JobTimeout, match="ran past its timeout of 0.2 s"), time_limit(0.2):
        busy(5)
    assert time.monotonic() - started < 1


def test_pool_thread_job_past_its_timeout_raises():
    started = time.monotonic()

    def job() -> None:
        with time_limit(0.2):
            busy(5)

    exc = in_thread(job)
    assert isinstance(exc, JobTimeout) and str(exc) == "ran past its timeout"
    assert time.monotonic() - started < 1


def test_pool_thread_watchdog_handles_many_jobs_with_their_own_deadlines():
    outcomes: dict[int, str] = {}

    def job(i: int) -> None:
        try:
            with time_limit(0.3 if i % 2 else 5):
                busy(1.0 if i % 2 else 0.05)
            outcomes[i] = "done"
        except JobTimeout:
            outcomes[i] = "timeout"

    threads = [threading.Thread(target=job, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == {i: "timeout" if i % 2 else "done" for i in range(8)}


def test_a_job_that_ends_in_time_leaves_nothing_pending_in_its_thread():
    def job() -> None:
        with time_limit(0.3):
            busy(0.05)
        busy(0.6)  # past the old deadline: a late watchdog exception would land here

    assert in_thread(job) is None


def test_threaded_workers_size_the_sql_pool_to_their_concurrency():
    from celery.concurrency.prefork import TaskPool as Prefork
    from celery.concurrency.thread import TaskPool as Threads

    conf = SimpleNamespace(worker_pool="prefork", worker_concurrency=None)
    assert worker_parallelism({"pool": Threads, "concurrency": 64}, conf) == ("thread", 64)
    assert worker_parallelism({"pool": Prefork, "concurrency": 2}, conf) == ("prefork", 2)
    assert worker_parallelism({"pool": Threads, "concurrency": 4, "autoscale": (32, 4)}, conf) == ("thread", 32)
    assert worker_parallelism({}, SimpleNamespace(worker_pool="threads", worker_concurrency=16)) == ("threads", 16)


def test_a_job_knows_the_time_it_has_left():
    assert job_time_left() is None
    with time_limit(5):
        assert 4 < job_time_left() <= 5
    assert job_time_left() is None
