"""Stock Celery: a no-op task with acks_late, on the service's celeryconfig and kombu's own Redis transport.

    REDIS_URL=redis://... celery -A bench.peers.stock_celery worker -Q analytics

Celery as anyone would run it, with the same settings (celeryconfig) as ours, but for task
events, off as Celery ships them. Like
bench/bare.py (the same stock Celery, timed by bench/run.py's own harness), it
declares the queues it uses: celeryconfig leaves the list to the app.
"""

import os

import redis
from celery import Celery

from bench.peers import COUNTER
from celeryconfig import task_queues_for

app = Celery("stock")
app.config_from_object("celeryconfig")
app.conf.broker_url = os.environ["REDIS_URL"]
app.conf.imports = ()
app.conf.task_acks_late = True
# celeryconfig does not create missing queues and leaves the list to the app.
app.conf.task_queues = task_queues_for(app.conf.broker_url, ("analytics", "email"))
app.conf.task_default_queue = "analytics"
# kombu's stock Redis transport options (celeryconfig sets none): ack emulation (an unacked
# record and an ack per message) on, as Celery ships.
app.conf.broker_transport_options = {}
app.conf.task_send_sent_event = False
# Celery's own default, as installed: no task events (ours ships them on, for Flower).
app.conf.worker_send_task_events = False
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="stock.noop", ignore_result=True, acks_late=True)
def noop() -> None:
    """Count one run."""
    _counter.incr(COUNTER)
