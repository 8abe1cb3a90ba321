"""Stock Celery: a no-op task with acks_late, on the service's celeryconfig and kombu's own Redis transport.

    REDIS_URL=redis://... celery -A bench.peers.stock_celery worker -Q analytics

Unlike bench/bare.py this does not install the service's hardened transport: it is
Celery as anyone would run it, with the same settings (celeryconfig) as ours.
"""

import os

import redis
from celery import Celery

from bench.peers import COUNTER

app = Celery("stock")
app.config_from_object("celeryconfig")
app.conf.broker_url = os.environ["REDIS_URL"]
app.conf.imports = ()
app.conf.task_acks_late = True
# kombu's stock Redis transport options: ack emulation (an unacked record and an ack per
# message) on, as Celery ships; celeryconfig turns it off for the service's own engine.
app.conf.broker_transport_options = {
    key: value
    for key, value in app.conf.broker_transport_options.items()
    if key not in ("ack_emulation", "queue_priorities")
}
app.conf.task_send_sent_event = False
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="stock.noop", ignore_result=True, acks_late=True)
def noop() -> None:
    """Count one run."""
    _counter.incr(COUNTER)
