"""The analytics queue's task."""

from jobqueue import Job
from jobqueue.task import job_task
from rideshare.analytics.queue import ANALYTICS_QUEUE


@job_task(ANALYTICS_QUEUE)
def record_event_task(job: Job) -> dict:
    """Store one analytics event and update the aggregates."""
    from rideshare.analytics.service import record_event

    return record_event(job.data)
