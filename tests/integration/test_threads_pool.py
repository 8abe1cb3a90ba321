"""The threads pool, as the email and payment workers ship: jobs overlap, each has a SQL
connection, and a job past its timeout still fails with a timeout (the watchdog)."""

import secrets

import pytest

from devstack.processes import stop
from rideshare.jobs import add_email_job
from tests.conftest import own_app, start_worker, wait_for_jobs

pytestmark = pytest.mark.integration


def most_at_once(jobs) -> int:
    """The largest number of jobs running at the same instant, from their start and finish times."""
    edges = sorted([(j.processed_on, 1) for j in jobs] + [(j.finished_at, -1) for j in jobs])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_threads_pool_runs_jobs_side_by_side_and_enforces_timeouts(stack, own_queues_env, tmp_path):
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"threads{secrets.token_hex(3)}", "DB_POOL_SIZE": "2"}
    smtp = stack.services.smtp.handler
    tag = env["JOB_KEY_PREFIX"]
    log = tmp_path / "worker.log"
    with own_app(env) as app:
        worker = start_worker(env, log, queues="email", pool="threads", concurrency=8, name=f"threads-{tag}@%h")
        try:
            jobs = []
            for i in range(24):
                data = {"to": f"{tag}-{i}@example.com", "subject": "s", "text": "t"}
                smtp.plan(data["to"], ("stall", 0.5))
                jobs.append(add_email_job(data, remove_on_complete=False))
            stalled = {"to": f"{tag}-stalled@example.com", "subject": "s", "text": "t"}
            smtp.plan(stalled["to"], ("stall", 6))
            late = add_email_job(stalled, timeout=1000, attempts=1)
            store = app.extensions["jobs"].store
            *finished, late = wait_for_jobs(store, [j.id for j in jobs] + [late.id], logs=[log])
        finally:
            stop(worker)
    assert [j.state for j in finished] == ["completed"] * len(jobs)
    assert [len(smtp.messages_to(j.data["to"])) for j in jobs] == [1] * len(jobs)
    # 8 threads, each job waiting 0.5 s on SMTP with its own SQL connection (pool
    # grown from DB_POOL_SIZE=2 to the concurrency), so several run at once.
    assert most_at_once(finished) >= 4, [(j.processed_on, j.finished_at) for j in finished]
    assert '"event": "db.pool_sized", "pool_size": 8' in log.read_text()
    assert late.state == "failed"
    assert late.failed_reason == "timeout: ran past its timeout", late.failed_reason
    assert late.finished_at - late.processed_on < 4000
