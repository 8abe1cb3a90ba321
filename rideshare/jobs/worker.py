"""A worker bootstep: heartbeats for the admin API, and pause/resume of queues."""

import contextlib
import logging
import os
from typing import Any

from celery import bootsteps
from redis.exceptions import RedisError

log = logging.getLogger("rideshare.jobs")

# How often each worker checks the pause flags and reports itself: pause and
# resume take effect within this interval.
POLL_INTERVAL_S = 1.0


class QueueControl(bootsteps.StartStopStep):
    """Stops consuming a queue while it is paused, and resumes when it is not."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref = None
        self.queues: list[str] = []
        self.cancelled: set[str] = set()

    def start(self, consumer: Any) -> None:
        # On a reconnect the consumer is rebuilt with every queue: start afresh.
        self.queues = sorted({q.name for q in consumer.task_consumer.queues})
        self.cancelled = set()
        self.tick(consumer)
        self.timer_ref = consumer.timer.call_repeatedly(POLL_INTERVAL_S, self.tick, (consumer,), priority=10)

    def stop(self, consumer: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def shutdown(self, consumer: Any) -> None:
        self.stop(consumer)
        with contextlib.suppress(RedisError):
            self._store(consumer).forget_worker(consumer.hostname)

    @staticmethod
    def _store(consumer: Any) -> Any:
        return consumer.app.flask_app.extensions["jobs"].store

    def tick(self, consumer: Any) -> None:
        store = self._store(consumer)
        try:
            paused = store.paused_queues(self.queues)
            store.heartbeat(
                consumer.hostname,
                {
                    "queues": self.queues,
                    "paused": sorted(paused),
                    "pid": os.getpid(),
                    "concurrency": consumer.pool.num_processes if consumer.pool else None,
                },
            )
        except RedisError as exc:
            log.warning("worker.heartbeat_failed", extra={"error": str(exc)})
            return
        for name in self.queues:
            if name in paused and name not in self.cancelled:
                consumer.cancel_task_queue(name)
                self.cancelled.add(name)
                log.info("queue.paused", extra={"queue": name, "worker": consumer.hostname})
            elif name not in paused and name in self.cancelled:
                consumer.add_task_queue(name)
                self.cancelled.discard(name)
                log.info("queue.resumed", extra={"queue": name, "worker": consumer.hostname})
