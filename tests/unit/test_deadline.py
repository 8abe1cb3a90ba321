"""Job deadlines: kept per thread, checked at safe points, never raised into a thread from outside."""

import threading
import time
from types import SimpleNamespace

import pytest

from jobqueue.deadline import checkpoint, job_deadline, job_time_left, past_deadline
from jobqueue.errors import JobTimeout
from jobqueue.worker import worker_parallelism


def test_a_job_knows_the_time_it_has_left():
    assert job_time_left() is None
    with job_deadline(5):
        assert 4 < job_time_left() <= 5
    assert job_time_left() is None


def test_checkpoint_raises_only_past_the_deadline():
    with job_deadline(0.05):
        checkpoint()
        time.sleep(0.1)
        assert past_deadline()
        with pytest.raises(JobTimeout, match="ran past its timeout"):
            checkpoint()
    checkpoint()  # outside a job: nothing to check


def test_nothing_lands_in_a_busy_job_from_outside():
    """A job that never reaches a check point runs to its end: no exception is injected."""
    outcome: list[str] = []

    def job() -> None:
        with job_deadline(0.05):
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                sum(range(100))
            outcome.append("ran to the end")

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(5)
    assert outcome == ["ran to the end"]


def test_deadlines_are_per_thread():
    seen: dict[str, float | None] = {}

    def job() -> None:
        with job_deadline(0.2):
            seen["thread"] = job_time_left()

    with job_deadline(10):
        thread = threading.Thread(target=job)
        thread.start()
        thread.join(5)
        assert job_time_left() > 9
    assert 0 < seen["thread"] <= 0.2


def test_threaded_workers_size_the_sql_pool_to_their_concurrency():
    from celery.concurrency.prefork import TaskPool as Prefork
    from celery.concurrency.thread import TaskPool as Threads

    conf = SimpleNamespace(worker_pool="prefork", worker_concurrency=None)
    assert worker_parallelism({"pool": Threads, "concurrency": 64}, conf) == ("thread", 64)
    assert worker_parallelism({"pool": Prefork, "concurrency": 2}, conf) == ("prefork", 2)
    assert worker_parallelism({"pool": Threads, "concurrency": 4, "autoscale": (32, 4)}, conf) == ("thread", 32)
    assert worker_parallelism({}, SimpleNamespace(worker_pool="threads", worker_concurrency=16)) == ("threads", 16)
