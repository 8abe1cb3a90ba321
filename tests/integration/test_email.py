"""The email queue against a real worker and a real SMTP server."""

import secrets

import pytest
from sqlalchemy import select

from rideshare.db import get_db
from rideshare.jobs import add_email_job
from rideshare.mail.models import EmailDelivery
from tests.conftest import eventually

pytestmark = pytest.mark.integration


def address() -> str:
    return f"rider-{secrets.token_hex(4)}@example.com"


def delivery(job_id: str) -> EmailDelivery:
    with get_db().session() as session:
        return session.scalar(select(EmailDelivery).where(EmailDelivery.job_id == job_id))


def test_welcome_email_arrives_with_text_and_html(app, client, stack):
    to = address()
    response = client.post("/send-welcome-email", json={"email": to, "name": "Ann"})
    assert response.status_code == 202
    job_id = response.json["jobId"]
    assert response.json["message"] == "Welcome email queued successfully"

    job = stack.wait_for_job(job_id)
    assert job.state == "completed"
    assert job.attempts == 1
    [received] = stack.services.smtp.handler.messages_to(to)
    assert received.message["Subject"] == "Welcome Ann!"
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in received.message.walk()
        if not part.is_multipart()
    }
    assert "welcome to our ride-sharing service" in parts["text/plain"]
    assert "<h1>Welcome Ann!</h1>" in parts["text/html"]
    row = delivery(job_id)
    assert (row.status, row.attempts) == ("sent", 1)
    assert row.last_reply.startswith("250")
    assert job.result["messageId"] == received.message["Message-ID"]


def test_transient_smtp_reply_is_retried_after_the_backoff(app, stack):
    to = address()
    stack.services.smtp.handler.plan(to, "451 4.3.0 try again later")
    job = add_email_job({"to": to, "subject": "Receipt", "text": "hello"}, backoff={"type": "fixed", "delay": 1500})
    job = stack.wait_for_job(job.id)

    assert job.state == "completed"
    assert job.attempts == 2
    first, second = app.extensions["jobs"].store.attempts(job.id)
    assert first["error"].startswith("SMTP 451")
    assert second["error"] is None
    assert second["startedAt"] - first["finishedAt"] >= 1500
    assert len(stack.services.smtp.handler.messages_to(to)) == 1
    row = delivery(job.id)
    assert (row.status, row.attempts) == ("sent", 2)


def test_permanent_smtp_reply_fails_at_once(app, stack):
    to = address()
    stack.services.smtp.handler.plan(to, "550 5.1.1 no such mailbox")
    job = add_email_job(
        {"to": to, "subject": "Receipt", "text": "hello"}, attempts=3, backoff={"type": "fixed", "delay": 100}
    )
    job = stack.wait_for_job(job.id)

    assert job.state == "failed"
    assert job.attempts == 1
    assert job.failed_reason.startswith("SMTP 550")
    assert stack.services.smtp.handler.messages_to(to) == []
    row = delivery(job.id)
    assert (row.status, row.attempts) == ("failed", 1)


def test_transient_failures_stop_after_the_last_attempt(app, stack):
    to = address()
    # A 450 is this message's trouble (a 421 would pause the whole queue: test_back_pressure).
    stack.services.smtp.handler.plan(to, "450 busy", "450 busy", "450 busy")
    job = add_email_job(
        {"to": to, "subject": "Hi", "text": "hello"}, attempts=2, backoff={"type": "fixed", "delay": 100}
    )
    job = stack.wait_for_job(job.id)

    assert (job.state, job.attempts) == ("failed", 2)
    assert job.failed_reason.startswith("SMTP 450")
    # The final-failure hook marks the row just after the job is stored as failed.
    assert eventually(lambda: delivery(job.id).status == "failed"), delivery(job.id).status
