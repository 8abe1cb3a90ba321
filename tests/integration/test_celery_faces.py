"""Celery stays what operators see: jobs taken from the store run as ordinary Celery requests.

`celery inspect active` and `reserved` list job ids; --autoscale grows the pool under a
backlog; --max-tasks-per-child recycles children; the solo pool runs jobs; remote control
(cancel_consumer, add_consumer) stops and resumes a worker's queue.
"""

import secrets
import time

import pytest

from devstack.processes import stop
from rideshare.jobs import add_email_job
from tests.conftest import eventually, own_app, start_worker, wait_for_jobs

pytestmark = pytest.mark.integration


def emails(stack, tag: str, n: int, stall: float) -> list:
    jobs = []
    for i in range(n):
        data = {"to": f"{tag}-{i}@example.com", "subject": "s", "text": "t"}
        if stall:
            stack.services.smtp.handler.plan(data["to"], ("stall", stall))
        jobs.append(add_email_job(data))
    return jobs


@pytest.fixture
def faces_env(own_queues_env):
    return {**own_queues_env, "JOB_KEY_PREFIX": f"faces{secrets.token_hex(3)}", "CELERY_TASK_LOG": "true"}


def test_inspect_lists_running_jobs_by_their_ids(stack, faces_env, tmp_path):
    tag = faces_env["JOB_KEY_PREFIX"]
    with own_app(faces_env) as app:
        node = f"faces-{tag}@localhost"
        worker = start_worker(faces_env, tmp_path / "w.log", queues="email", concurrency=2, pool="threads", name=node)
        try:
            jobs = emails(stack, tag, 4, stall=6.0)
            store = app.extensions["jobs"].store
            assert eventually(lambda: store.counts("email")["active"] == 2, timeout=20)
            inspect = app.extensions["celery"].control.inspect(destination=[node], timeout=3)
            active: dict = {}
            for _ in range(3):  # a broadcast reply can be late on a loaded machine; ask again
                active = inspect.active() or {}
                if any(active.values()):
                    break
            reserved = inspect.reserved() or {}
            running = {task["id"] for tasks in active.values() for task in tasks}
            held = {j.id for j in store.get_many([j.id for j in jobs]) if j.state == "active"}
            names = {task["name"] for tasks in active.values() for task in tasks}
            waiting = store.counts("email")["waiting"]
            wait_for_jobs(store, [j.id for j in jobs], ("completed",), timeout=60)
        finally:
            stop(worker)
    print(f"\ninspect: active={sorted(running)} held={sorted(held)} reserved={reserved}")
    assert running == held and len(running) == 2
    assert names == {"email.send"}
    # A worker fetches only for free slots: nothing sits reserved beyond what runs.
    assert {task["id"] for tasks in reserved.values() for task in tasks} <= running
    assert waiting == 2


def test_autoscale_grows_the_pool_under_a_backlog(stack, faces_env, tmp_path):
    tag = faces_env["JOB_KEY_PREFIX"]
    with own_app(faces_env) as app:
        worker = start_worker(faces_env, tmp_path / "w.log", queues="email", concurrency=1, extra=("--autoscale=3,1",))
        try:
            jobs = emails(stack, tag, 9, stall=1.5)
            store = app.extensions["jobs"].store
            peak = 0
            deadline = time.monotonic() + 60
            while store.counts("email")["completed"] < 9 and time.monotonic() < deadline:
                peak = max(peak, store.counts("email")["active"])
                time.sleep(0.05)
            final = wait_for_jobs(store, [j.id for j in jobs], ("completed",), timeout=30)
        finally:
            stop(worker)
    print(f"\nautoscale 3,1: peak active jobs {peak}")
    assert peak == 3  # the autoscaler's most, never more
    assert [j.attempts for j in final] == [1] * 9


def test_max_tasks_per_child_recycles_children(stack, faces_env, tmp_path):
    tag = faces_env["JOB_KEY_PREFIX"]
    log = tmp_path / "w.log"
    with own_app(faces_env) as app:
        worker = start_worker(faces_env, log, queues="email", concurrency=1, extra=("--max-tasks-per-child=2",))
        try:
            jobs = emails(stack, tag, 6, stall=0)
            final = wait_for_jobs(app.extensions["jobs"].store, [j.id for j in jobs], ("completed",), timeout=60)
        finally:
            stop(worker)
    children = {line.split("/")[1].split("]")[0] for line in log.read_text().splitlines()
                if "succeeded in" in line and "ForkPoolWorker" in line}  # fmt: skip
    print(f"\nmax-tasks-per-child=2: 6 jobs ran in {sorted(children)}")
    assert [j.state for j in final] == ["completed"] * 6
    assert len(children) >= 3, children


def test_solo_pool_and_remote_control(stack, faces_env, tmp_path):
    tag = faces_env["JOB_KEY_PREFIX"]
    node = f"solo-{tag}@localhost"
    with own_app(faces_env) as app:
        worker = start_worker(faces_env, tmp_path / "w.log", queues="email", concurrency=1, pool="solo", name=node)
        celery = app.extensions["celery"]
        store = app.extensions["jobs"].store
        try:
            first = emails(stack, f"{tag}-a", 3, stall=0)
            wait_for_jobs(store, [j.id for j in first], ("completed",), timeout=30)
            # cancel_consumer: the worker stops taking the queue's jobs; add_consumer: it resumes.
            assert celery.control.cancel_consumer("email", destination=[node], reply=True, timeout=10)
            time.sleep(1.0)
            later = emails(stack, f"{tag}-b", 3, stall=0)
            time.sleep(2.0)
            held_back = store.counts("email")["waiting"]
            assert celery.control.add_consumer("email", destination=[node], reply=True, timeout=10)
            resumed_at = time.monotonic()
            final = wait_for_jobs(store, [j.id for j in later], ("completed",), timeout=30)
            took = time.monotonic() - resumed_at
        finally:
            stop(worker)
    print(f"\nsolo + remote control: {held_back} held back while cancelled, ran {took:.2f} s after add_consumer")
    assert held_back == 3
    assert [j.state for j in final] == ["completed"] * 3
    assert took < 5
