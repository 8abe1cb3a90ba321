"""The app's job queues in the original design's vocabulary: add_email_job, get_job, get_job_counts.

The engine is jobqueue; these functions find the queues bound to the current Flask app.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from flask import current_app

from jobqueue import InvalidJobData, Job, JobQueue, JobService, QueueUnavailable


def _service() -> JobService:
    return current_app.extensions["jobs"]


def get_queue(name: str) -> JobQueue:
    """The queue called name (email, analytics or payment)."""
    return _service().queues[name]


def add_email_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue an email: data has to, subject, text and optionally html."""
    return get_queue("email").add(data, **options)


def add_analytics_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue an analytics event: data has event, eventId and the event's fields."""
    return get_queue("analytics").add(data, **options)


def add_analytics_jobs(items: Sequence[Mapping[str, Any]], **options: Any) -> list[Job]:
    """Queue many analytics events at once (JobQueue.add_bulk)."""
    return get_queue("analytics").add_bulk(items, **options)


def add_payment_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue a payment charge: data has paymentId, the SQL row to charge."""
    return get_queue("payment").add(data, **options)


def get_job(job_id: str) -> Job | None:
    """Any queue's job by id, or None if there is no such job."""
    return _service().store.get(job_id)


def get_job_counts(queue: str) -> dict[str, int]:
    """Jobs per state in one queue."""
    return get_queue(queue).get_job_counts()


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
