"""The service's own path with a no-op job: queue API -> broker -> JobTask -> job store.

celery -A bench.full worker -Q analytics
"""

import dataclasses

from jobqueue import Job, JobQueue
from jobqueue.task import job_task
from rideshare import create_app
from rideshare.analytics.queue import ANALYTICS_QUEUE

flask_app = create_app()
app = flask_app.extensions["celery"]
# The analytics queue's own policy (batches of 20, its retries), with a task that does nothing.
NOOP_QUEUE = dataclasses.replace(ANALYTICS_QUEUE, task="bench.noop", schema=None)


@job_task(NOOP_QUEUE)
def noop(job: Job) -> None:
    """Nothing: what is measured is the job tracking around it."""
    return None


def noop_queue() -> JobQueue:
    """A queue for the no-op task on the analytics queue, with that queue's defaults."""
    analytics = flask_app.extensions["jobs"].queues["analytics"]
    return JobQueue(
        NOOP_QUEUE,
        app,
        analytics.store,
        analytics.defaults,
        (analytics.keep_completed, analytics.keep_failed),
        direct=analytics.messages is not None,
    )
