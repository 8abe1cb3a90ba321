"""Many workers on one queue, each with its own node name: they share the load, join and leave mid-run."""

import secrets
import signal
import time
from collections import Counter

import pytest

from devstack.processes import stop
from rideshare.jobs import add_email_job
from tests.conftest import own_app, start_worker, wait_for_jobs

pytestmark = pytest.mark.integration


def test_workers_share_a_queue_join_mid_run_and_hand_back_on_sigterm(stack, own_queues_env, tmp_path):
    env = {
        **own_queues_env,
        "JOB_KEY_PREFIX": f"scale{secrets.token_hex(3)}",
        "JOB_KEEP_COMPLETED": "10000",
    }
    tag = env["JOB_KEY_PREFIX"]
    workers = []
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        try:
            workers.append(start_worker(env, tmp_path / "w1.log", queues="email", concurrency=2, name=f"w1-{tag}@%h"))
            jobs = []
            for i in range(240):
                data = {"to": f"{tag}-{i}@example.com", "subject": "s", "text": "t"}
                stack.services.smtp.handler.plan(data["to"], ("stall", 0.1))
                jobs.append(add_email_job(data))
            time.sleep(1.0)
            # Two more workers join mid-run; then the first leaves with SIGTERM.
            workers.append(start_worker(env, tmp_path / "w2.log", queues="email", concurrency=2, name=f"w2-{tag}@%h"))
            workers.append(start_worker(env, tmp_path / "w3.log", queues="email", concurrency=2, name=f"w3-{tag}@%h"))
            time.sleep(1.0)
            workers[0].send_signal(signal.SIGTERM)
            workers[0].wait(30)
            final = wait_for_jobs(store, [j.id for j in jobs], ("completed",), timeout=90)
        finally:
            for worker in workers:
                stop(worker)
    by_worker = Counter(job.worker.split("@")[0].split("-")[0] for job in final)
    sent = [len(stack.services.smtp.handler.messages_to(j.data["to"])) for j in jobs]
    print(f"\nscale-out: jobs per worker {dict(by_worker)}")
    assert set(by_worker) == {"w1", "w2", "w3"}, by_worker
    assert by_worker["w2"] >= 5 and by_worker["w3"] >= 5, "the workers that joined took work at once"
    assert sent == [1] * len(jobs), "nothing lost or doubled when w1 left"
