"""Dramatiq on its Redis broker with a no-op actor, run by Dramatiq's own CLI:

    REDIS_URL=redis://... python -m dramatiq bench.peers.dramatiq_app -p 2 -t 8 -Q bench

Stock broker and default middleware. With BENCH_GATE=1 each worker process, once
connected, counts itself on READY and waits (Dramatiq's before_worker_boot hook, which
runs before any consumer starts) for a token on GATE, so the bench can start all
processes on jobs already queued at one moment it times.
"""

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from bench.peers import COUNTER, GATE, READY

QUEUE = "bench"
_url = os.environ["REDIS_URL"]


class Gate(Middleware):
    """Holds a worker process before its consumers start until the bench hands it a token."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        client = redis.Redis.from_url(_url)
        client.incr(READY)
        client.blpop([GATE], timeout=120)
        client.close()


broker = RedisBroker(url=_url)
if os.environ.get("BENCH_GATE") == "1":
    broker.add_middleware(Gate())
dramatiq.set_broker(broker)
_counter = redis.Redis.from_url(_url)


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    """Count one run."""
    _counter.incr(COUNTER)
