"""get_job_counts against reality: a worker of our own, stopped and started around a mixed run."""

import secrets
import time

import pytest

from devstack.processes import stop
from rideshare.jobs import add_email_job, get_job, get_job_counts
from tests.conftest import own_app, start_worker

pytestmark = pytest.mark.integration


def test_counts_match_a_mixed_run(stack, own_queues_env, tmp_path):
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"counts{secrets.token_hex(3)}"}

    def mail(tag: str) -> dict:
        return {"to": f"{tag}-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello"}

    with own_app(env):
        ok = [add_email_job(mail("ok")) for _ in range(3)]
        bad = []
        for _ in range(2):
            data = mail("bad")
            stack.services.smtp.handler.plan(data["to"], "550 rejected")
            bad.append(add_email_job(data))
        delayed = [add_email_job(mail("later"), delay=120_000) for _ in range(2)]
        assert get_job_counts("email") == {
            "waiting": 5,
            "delayed": 2,
            "active": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "expired": 0,
            "grouped": 0,
            "waiting-children": 0,
            "paused": 0,
        }

        worker = start_worker(env, tmp_path / "worker.log", queues="email", concurrency=2)
        try:
            deadline = time.monotonic() + 30
            while {get_job(j.id).state for j in ok + bad} - {"completed", "failed"}:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stop(worker)
        waiting = [add_email_job(mail("queued")) for _ in range(4)]

        assert get_job_counts("email") == {
            "waiting": 4,
            "delayed": 2,
            "active": 0,
            "completed": 3,
            "failed": 2,
            "cancelled": 0,
            "expired": 0,
            "grouped": 0,
            "waiting-children": 0,
            "paused": 0,
        }
        assert {get_job(j.id).state for j in ok} == {"completed"}
        assert {get_job(j.id).state for j in bad} == {"failed"}
        assert {get_job(j.id).state for j in delayed} == {"delayed"}
        assert {get_job(j.id).state for j in waiting} == {"waiting"}
        assert get_job_counts("payment") == {
            "waiting": 0,
            "delayed": 0,
            "active": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "expired": 0,
            "grouped": 0,
            "waiting-children": 0,
            "paused": 0,
        }
