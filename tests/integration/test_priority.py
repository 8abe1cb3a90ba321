"""Priority against a real worker: a priority-0 job added after 200 low-priority ones starts among the first."""

import secrets

import pytest

from devstack.processes import stop
from rideshare.jobs import add_email_job, get_queue
from rideshare.mail.queue import EMAIL_QUEUE
from tests.conftest import own_app, start_worker, wait_for_jobs

# The job store's moves, through real workers: they never touch SQL, so once, on SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sqlite_only")]

WAITING = 200
LOWEST = EMAIL_QUEUE.priorities - 1  # lower numbers run first


def test_a_priority_0_job_added_last_starts_among_the_first(stack, own_queues_env, tmp_path):
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"prio{secrets.token_hex(3)}"}

    def mail(tag: str) -> dict:
        return {"to": f"{tag}-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello"}

    with own_app(env):
        # No worker yet: every job waits, the urgent one added last of all.
        # remove_on_complete=False: all 201 are read back after the run (retention keeps fewer).
        low = [add_email_job(mail("low"), priority=LOWEST, remove_on_complete=False) for _ in range(WAITING)]
        urgent = add_email_job(mail("urgent"), priority=0, remove_on_complete=False)
        assert get_queue("email").get_job_counts()["waiting"] == WAITING + 1

        log = tmp_path / "worker.log"
        worker = start_worker(env, log, queues="email", concurrency=2)
        try:
            jobs = wait_for_jobs(
                get_queue("email").store, [urgent.id, *(j.id for j in low)], ("completed",), 120, [log]
            )
        finally:
            stop(worker)

    urgent_job, low_jobs = jobs[0], jobs[1:]
    # Started within the first 3: fewer than 3 low-priority jobs started before it or in the same millisecond.
    ahead = sorted(job.processed_on for job in low_jobs if job.processed_on <= urgent_job.processed_on)
    assert len(ahead) < 3, (urgent_job.processed_on, ahead, min(job.processed_on for job in low_jobs))
