"""The analytics queue's task."""

from jobqueue import Job
from jobqueue.task import job_task
from rideshare.analytics.queue import ANALYTICS_QUEUE


@job_task(ANALYTICS_QUEUE)
def record_event_task(job: Job) -> dict:
    """Store one analytics event and update the aggregates, or recompute a day's roll-up, or
    settle a ride (the root of its settlement flow, rideshare.rides.settlement)."""
    from rideshare.analytics.service import DAILY_ROLLUP, record_event, roll_up_day

    if job.data["event"] == DAILY_ROLLUP:
        return roll_up_day(job)
    if job.data["event"] == "settle_ride":
        from rideshare.rides.settlement import settle_ride

        return settle_ride(job)
    return record_event(job.data)
