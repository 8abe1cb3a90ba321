"""The analytics queue's task."""

from celery import shared_task
from sqlalchemy.exc import OperationalError

from rideshare.analytics.schemas import AnalyticsJobSchema
from rideshare.analytics.service import record_event
from rideshare.jobs.options import Backoff
from rideshare.jobs.queue import Job
from rideshare.jobs.task import JobTask


@shared_task(
    base=JobTask,
    name="analytics.record",
    queue="analytics",
    attempts=None,  # JOB_RETRY_ATTEMPTS
    backoff=Backoff("exponential", None),  # from JOB_RETRY_DELAY
    # The database being unreachable or locked is worth waiting out.
    retry_on=(OperationalError,),
    data_schema=AnalyticsJobSchema,
    # Short SQL upserts: bulk adds and scheduler promotions carry up to 20 per message.
    batch_size=20,
)
def record_event_task(job: Job) -> dict:
    """Store one analytics event and update the aggregates."""
    return record_event(job.data)
