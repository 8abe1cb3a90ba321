"""The email queue's task."""

from jobqueue import Job
from jobqueue.task import job_task
from rideshare.mail.queue import EMAIL_QUEUE


@job_task(EMAIL_QUEUE)
def send_email_task(job: Job) -> dict:
    """Send one email over SMTP."""
    from rideshare.mail.service import send_email

    return send_email(job)
