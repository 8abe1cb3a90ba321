"""The email queue's task."""

import smtplib

from celery import shared_task
from sqlalchemy.exc import OperationalError

from rideshare.jobs.options import Backoff
from rideshare.jobs.queue import Job
from rideshare.jobs.task import JobTask
from rideshare.mail.schemas import EmailJobSchema
from rideshare.mail.service import mark_delivery_failed, send_email


@shared_task(
    base=JobTask,
    name="email.send",
    queue="email",
    attempts=3,
    backoff=Backoff("exponential", 2000),
    # SMTP 4xx replies and dropped connections raise TransientJobError; 5xx is permanent.
    # OperationalError: the database that records deliveries is unreachable.
    retry_on=(smtplib.SMTPServerDisconnected, OperationalError),
    data_schema=EmailJobSchema,
    on_final_failure=lambda task, job, reason: mark_delivery_failed(job, reason),
)
def send_email_task(job: Job) -> dict:
    """Send one email over SMTP."""
    return send_email(job)
