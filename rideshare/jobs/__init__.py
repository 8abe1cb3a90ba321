"""Jobs: the BullMQ-style queue API over Celery, and the job store that tracks every job."""

from rideshare.jobs.queue import (
    InvalidJobData,
    Job,
    JobQueue,
    QueueUnavailable,
    add_analytics_job,
    add_analytics_jobs,
    add_email_job,
    add_payment_job,
    get_job,
    get_job_counts,
    get_queue,
)

__all__ = [
    "InvalidJobData",
    "Job",
    "JobQueue",
    "QueueUnavailable",
    "add_analytics_job",
    "add_analytics_jobs",
    "add_email_job",
    "add_payment_job",
    "get_job",
    "get_job_counts",
    "get_queue",
]
