"""Delays that outlast a worker restart, and poison messages on the broker."""

import time

import pytest

from rideshare.jobs import add_email_job

pytestmark = pytest.mark.faults


def test_a_delay_runs_once_and_survives_a_worker_restart(rig):
    prefix = rig.env["JOB_KEY_PREFIX"]
    with rig.app.app_context():
        first = rig.worker("email", concurrency=2)
        jobs = [
            add_email_job({"to": f"late-{i}-{prefix}@example.com", "subject": "s", "text": "t"}, delay=4000)
            for i in range(5)
        ]
        time.sleep(1.5)
        first.terminate()  # a restart while every job still waits on its delay
        first.wait(30)
        rig.worker("email", concurrency=2)
        final = rig.wait_all([j.id for j in jobs], timeout=40)
        time.sleep(3)  # room for any duplicate to show up
    received = [len(rig.services.smtp.handler.messages_to(j.data["to"])) for j in jobs]
    assert {j.state for j in final} == {"completed"}
    assert [j.attempts for j in final] == [1] * 5
    assert all(j.processed_on - j.created_at >= 4000 for j in final)
    assert received == [1] * 5


def test_unreadable_jobs_and_stray_messages_fail_alone_and_other_jobs_keep_flowing(rig):
    prefix = rig.env["JOB_KEY_PREFIX"]
    store = rig.store
    with rig.app.app_context():
        worker = rig.worker("email", concurrency=2)
        # A job whose stored data is not JSON (a hand edit, a bad migration).
        corrupt = add_email_job({"to": f"corrupt-{prefix}@example.com", "subject": "s", "text": "t"}, delay=1500)
        store.redis.hset(store.keys.job(corrupt.id, corrupt.queue), "data", "\x00not json at all")
        # Messages straight through the broker: an unknown task, and a job task called by hand.
        celery = rig.app.extensions["celery"]
        celery.send_task("email.no_such_task", args=["x"], queue="email")
        celery.send_task("email.send", args=[corrupt.id], queue="email")
        jobs = [
            add_email_job({"to": f"after-{i}-{prefix}@example.com", "subject": "s", "text": "t"}) for i in range(10)
        ]
        final = rig.wait_all([j.id for j in jobs], timeout=30)
        [bad] = rig.wait_all([corrupt.id], states=("failed",), timeout=30)
        time.sleep(0.5)
    log = worker.log.read_text()
    assert worker.poll() is None, "the worker is still running"
    assert {j.state for j in final} == {"completed"}
    assert bad.failed_reason.startswith("unreadable job record"), bad.failed_reason
    assert bad.attempts == 1
    assert "email.no_such_task" in log  # logged and dropped by Celery
    assert '"event": "job.not_from_store"' in log
