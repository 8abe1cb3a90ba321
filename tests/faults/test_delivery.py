"""Delays that outlast a worker restart, and poison messages on the broker."""

import json
import time

import pytest
import redis

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


def test_poison_messages_are_filed_and_other_jobs_keep_flowing(rig):
    prefix = rig.env["JOB_KEY_PREFIX"]
    broker = redis.Redis.from_url(rig.env["REDIS_URL"])
    with rig.app.app_context():
        worker = rig.worker("email", concurrency=2)
        broker.lpush("email", b"\x00not json at all")  # undecodable payload
        broker.lpush("email", json.dumps({"just": "a dict"}))  # JSON, but no message envelope
        rig.app.extensions["celery"].send_task("email.no_such_task", args=["x"], queue="email")  # unknown task
        jobs = [
            add_email_job({"to": f"after-{i}-{prefix}@example.com", "subject": "s", "text": "t"}) for i in range(10)
        ]
        final = rig.wait_all([j.id for j in jobs], timeout=30)
        deadline = time.monotonic() + 10
        while broker.llen(f"{prefix}:deadletter") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    letters = broker.lrange(f"{prefix}:deadletter", 0, -1)
    broker.close()
    assert worker.poll() is None, "the worker is still running"
    assert {j.state for j in final} == {"completed"}
    assert len(letters) == 2
    assert any(b"not json at all" in letter for letter in letters)
    assert "email.no_such_task" in worker.log.read_text()  # logged and dropped by Celery
