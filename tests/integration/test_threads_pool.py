"""The threads pool, as the email and payment workers ship: jobs overlap, each has a SQL
connection, and a job past its timeout still fails with a timeout (the watchdog)."""

import secrets
import time

import pytest

from devstack.processes import start_celery_worker, stop
from rideshare.jobs import add_email_job
from tests.conftest import REPO, app_from_env, close_app

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
    app = app_from_env(env)
    store = app.extensions["jobs"].store
    store.redis.flushdb()
    smtp = stack.services.smtp.handler
    tag = env["JOB_KEY_PREFIX"]
    log = tmp_path / "worker.log"
    worker = None
    try:
        with app.app_context():
            worker = start_celery_worker(
                env, log, queues="email", pool="threads", concurrency=8, name=f"threads-{tag}@%h", cwd=REPO
            )
            jobs = []
            for i in range(24):
                data = {"to": f"{tag}-{i}@example.com", "subject": "s", "text": "t"}
                smtp.plan(data["to"], ("stall", 0.5))
                jobs.append(add_email_job(data, remove_on_complete=False))
            stalled = {"to": f"{tag}-stalled@example.com", "subject": "s", "text": "t"}
            smtp.plan(stalled["to"], ("stall", 6))
            late = add_email_job(stalled, timeout=1000, attempts=1)
            ids = [j.id for j in jobs] + [late.id]
            deadline = time.monotonic() + 60
            while any(j is None or j.state not in ("completed", "failed") for j in store.get_many(ids)):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            *finished, late = store.get_many(ids)
        assert [j.state for j in finished] == ["completed"] * len(jobs)
        assert [len(smtp.messages_to(j.data["to"])) for j in jobs] == [1] * len(jobs)
        # 8 threads, each job waiting 0.5 s on SMTP with its own SQL connection (pool
        # grown from DB_POOL_SIZE=2 to the concurrency), so several run at once.
        assert most_at_once(finished) >= 4, [(j.processed_on, j.finished_at) for j in finished]
        assert '"event": "db.pool_sized", "pool_size": 8' in log.read_text()
        assert late.state == "failed"
        assert late.failed_reason == "timeout: ran past its timeout", late.failed_reason
        assert late.finished_at - late.processed_on < 4000
    finally:
        if worker is not None:
            stop(worker)
        store.redis.flushdb()
        close_app(app)
