"""A bare Celery app with a no-op task, on the same broker and settings: the baseline.

celery -A bench.bare worker -Q analytics
"""

import os

import redis
from celery import Celery

from jobqueue import transport

transport.install()  # the same transport as the service, so only job tracking differs
app = Celery("bare")
app.config_from_object("celeryconfig")
app.conf.broker_url = os.environ["REDIS_URL"]
app.conf.imports = ()
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bare.noop", ignore_result=True)
def noop() -> None:
    """Count one run (the bare path's only way to know it is done)."""
    _counter.incr("bench:bare:done")
