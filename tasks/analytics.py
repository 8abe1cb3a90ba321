"""The analytics queue's task."""

from jobqueue import Job
from jobqueue.task import job_task
from rideshare.analytics.queue import ANALYTICS_QUEUE


@job_task(ANALYTICS_QUEUE)
def record_event_task(job: Job) -> dict:
    """Store one analytics event and update the aggregates, or recompute a day's roll-up."""
    from rideshare.analytics.service import DAILY_ROLLUP, record_event, roll_up_day

    if job.data["event"] == DAILY_ROLLUP:
        return roll_up_day(job)
    return record_event(job.data)
