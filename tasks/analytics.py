"""The analytics queue's task."""

from jobqueue import Job
from jobqueue.task import job_task
from rideshare.analytics.queue import ANALYTICS_QUEUE


@job_task(ANALYTICS_QUEUE)
def record_event_task(job: Job) -> dict:
    """Store one analytics event and update the aggregates, or recompute a day's roll-up, or
    settle a ride (the root of its settlement flow, rideshare.rides.settlement), or email the
    drivers their day's payout summary, or expire rides left requested (two shipped schedules)."""
    from rideshare.analytics.service import DAILY_ROLLUP, record_event, roll_up_day

    if job.data["event"] == DAILY_ROLLUP:
        return roll_up_day(job)
    if job.data["event"] == "payout_summary":
        from rideshare.analytics.payouts import send_payout_summaries

        return send_payout_summaries(job)
    if job.data["event"] == "expire_rides":
        from flask import current_app

        from rideshare.rides.service import expire_stale_rides

        return expire_stale_rides(current_app.config["RIDE_EXPIRY_MINUTES"])
    if job.data["event"] == "settle_ride":
        from rideshare.rides.settlement import settle_ride

        return settle_ride(job)
    return record_event(job.data)
