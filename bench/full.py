"""The service's own path with a no-op job: queue API -> job store -> fetch -> JobTask -> finish.

celery -A bench.full worker -Q bench

A queue of its own, "bench", with the analytics queue's policy (attempts, backoff,
retries, timeout) and a task that does nothing, registered in the app's JobService
beside the shipped queues, and in Celery's task_queues so that `-Q bench` (and
add_consumer) is accepted. Both the process that adds the jobs and the worker import
this module, so both find the queue in `app.jobs.queues`; the worker's fetcher serves
it because it is there and in the worker's -Q.
"""

import dataclasses

from celeryconfig import task_queues_for
from jobqueue import Job, JobQueue
from jobqueue.task import job_task
from rideshare import create_app
from rideshare.analytics.queue import ANALYTICS_QUEUE

QUEUE = "bench"
# The analytics queue's own policy (its attempts, backoff, retries, timeout), under a name
# and task of its own, with no data schema: what is measured is the job tracking around it.
NOOP_QUEUE = dataclasses.replace(ANALYTICS_QUEUE, name=QUEUE, task="bench.noop", schema=None)

flask_app = create_app()
app = flask_app.extensions["celery"]
_jobs = flask_app.extensions["jobs"]
_analytics = _jobs.queues["analytics"]
# The analytics queue's defaults, retention and admission check: a JobQueue as
# JobService.from_policies builds one for each shipped policy.
_jobs.queues[QUEUE] = JobQueue(
    NOOP_QUEUE,
    _analytics.store,
    _analytics.defaults,
    (_analytics.keep_completed, _analytics.keep_failed),
    _analytics.admission,
)
# Celery validates -Q and add_consumer against task_queues (task_create_missing_queues is off).
app.conf.task_queues = (*app.conf.task_queues, *task_queues_for(app.conf.broker_url, (QUEUE,)))
app.conf.task_routes = {**app.conf.task_routes, NOOP_QUEUE.task: {"queue": QUEUE, "routing_key": QUEUE}}


@job_task(NOOP_QUEUE)
def noop(job: Job) -> None:
    """Nothing: what is measured is the job tracking around it."""
    return None


def noop_queue() -> JobQueue:
    """The no-op queue the API side adds jobs to (the same JobQueue the worker's fetcher serves)."""
    return _jobs.queues[QUEUE]
