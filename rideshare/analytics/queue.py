"""The analytics queue's whole policy."""

from sqlalchemy.exc import OperationalError

from jobqueue import Backoff, QueuePolicy
from rideshare.analytics.schemas import AnalyticsJobSchema

ANALYTICS_QUEUE = QueuePolicy(
    name="analytics",
    task="analytics.record",
    schema=AnalyticsJobSchema,
    attempts=None,  # JOB_RETRY_ATTEMPTS
    backoff=Backoff("exponential", None),  # from JOB_RETRY_DELAY
    # The database being unreachable or locked is worth waiting out.
    retry_on=(OperationalError,),
    # A ride's events are found with its payment and receipt jobs (GET /admin/jobs?rideId=).
    tags=("rideId", "driverId"),
)
