"""Job options and states through a real worker: delay, timeout, job_id, not-found."""

import secrets
import time

import pytest

from rideshare.jobs import add_email_job, get_job, get_job_counts

pytestmark = pytest.mark.integration


def mail(**extra) -> dict:
    return {"to": f"u-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello", **extra}


def test_delayed_job_does_not_run_before_its_delay(app, stack):
    job = add_email_job(mail(), delay=2000)
    assert job.state == "delayed"
    time.sleep(1.0)
    assert get_job(job.id).state == "delayed"
    assert stack.services.smtp.handler.messages_to(job.data["to"]) == []

    job = stack.wait_for_job(job.id)
    assert job.state == "completed"
    assert job.processed_on - job.created_at >= 2000
    [received] = stack.services.smtp.handler.messages_to(job.data["to"])
    assert received.at * 1000 >= job.created_at + 2000


def test_job_over_its_timeout_fails_with_a_timeout_reason(app, stack):
    data = mail()
    stack.services.smtp.handler.plan(data["to"], ("stall", 4))
    job = add_email_job(data, timeout=1000, attempts=1)
    job = stack.wait_for_job(job.id, timeout=20)

    assert job.state == "failed"
    assert job.failed_reason.startswith("timeout")
    assert job.finished_at - job.processed_on < 3000


def test_same_job_id_gives_one_job(app, stack):
    data = mail()
    job_id = f"welcome-{secrets.token_hex(4)}"
    first = add_email_job(data, job_id=job_id)
    second = add_email_job({**data, "subject": "changed"}, job_id=job_id)

    assert first.id == second.id == job_id
    assert second.data["subject"] == "Hi"
    stack.wait_for_job(job_id)
    time.sleep(0.5)
    assert len(stack.services.smtp.handler.messages_to(data["to"])) == 1


def test_unknown_job_id_is_not_found(app, client, auth_headers):
    assert get_job("never-created") is None
    response = client.get("/jobs/never-created", headers=auth_headers(role="admin"))
    assert response.status_code == 404
    assert response.json["message"] == "job never-created not found"


def test_counts_follow_the_job_through_its_states(app, stack):
    before = get_job_counts("email")
    job = add_email_job(mail(), delay=60_000)
    counts = get_job_counts("email")
    assert counts["delayed"] == before["delayed"] + 1
    assert set(counts) == {
        "waiting",
        "grouped",
        "delayed",
        "waiting-children",
        "active",
        "completed",
        "failed",
        "cancelled",
        "expired",
        "paused",
    }
    # Waiting jobs are counted too; this one runs at once.
    quick = stack.wait_for_job(add_email_job(mail()).id)
    assert quick.state == "completed"
    assert get_job_counts("email")["completed"] >= before["completed"] + 1
    assert get_job(job.id).state == "delayed"
