"""The service's own path with a no-op job: queue API -> broker -> JobTask -> job store.

celery -A bench.full worker -Q analytics
"""

from celery import shared_task

from jobqueue import Job, JobQueue
from jobqueue.task import JobTask
from rideshare import create_app

flask_app = create_app()
app = flask_app.extensions["celery"]


@shared_task(base=JobTask, name="bench.noop", queue="analytics", batch_size=app.tasks["analytics.record"].batch_size)
def noop(job: Job) -> None:
    """Nothing: what is measured is the job tracking around it."""
    return None


def noop_queue() -> JobQueue:
    """A queue for the no-op task on the analytics queue, with that queue's defaults."""
    analytics = flask_app.extensions["jobs"].queues["analytics"]
    return JobQueue(
        "analytics",
        "bench.noop",
        app,
        analytics.store,
        analytics.defaults,
        (analytics.keep_completed, analytics.keep_failed),
    )
