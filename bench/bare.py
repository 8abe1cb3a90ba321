"""A bare Celery app with a no-op task, on the same broker and settings: the baseline.

celery -A bench.bare worker -Q analytics

Stock Celery on kombu's own Redis transport (the service has no transport of its own
any more), with the service's celeryconfig (task_acks_late, task_reject_on_worker_lost,
JSON only, task events as shipped, prefetch from CELERY_PREFETCH_MULTIPLIER) and the
same queue declarations the service derives from its policies. Its no-op only INCRs a
counter, so what separates it from bench/full.py is what tracking and fencing cost
per job.
"""

import os

import redis
from celery import Celery

from celeryconfig import task_queues_for

app = Celery("bare")
app.config_from_object("celeryconfig")
app.conf.broker_url = os.environ["REDIS_URL"]
app.conf.imports = ()
# celeryconfig leaves the queue list to the app (the service derives it from its policies);
# missing queues are not created, so the queues this app uses are declared here.
app.conf.task_queues = task_queues_for(app.conf.broker_url, ("analytics", "email"))
app.conf.task_default_queue = "analytics"
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bare.noop", ignore_result=True)
def noop() -> None:
    """Count one run (the bare path's only way to know it is done)."""
    _counter.incr("bench:bare:done")
