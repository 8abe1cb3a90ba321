"""A worker bootstep: the scheduler of delayed jobs, stalled-job recovery, heartbeats, pause/resume."""

import contextlib
import logging
import os
import time
from typing import Any

from celery import bootsteps
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

log = logging.getLogger("rideshare.jobs")

# Due delayed jobs are published within this interval.
SCHEDULE_INTERVAL_S = 0.2
# Pause flags and heartbeats: pause and resume take effect within this interval.
POLL_INTERVAL_S = 1.0
# Stalled jobs (their worker died) and lost messages are looked for this often.
RECOVER_INTERVAL_S = 2.0


class QueueControl(bootsteps.StartStopStep):
    """Publishes due delayed jobs, recovers stalled ones, and follows the pause flags."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref = None
        self.queues: list[str] = []
        self.cancelled: set[str] = set()
        self.last_poll = self.last_recover = 0.0

    def start(self, consumer: Any) -> None:
        # On a reconnect the consumer is rebuilt with every queue: start afresh.
        self.queues = sorted({q.name for q in consumer.task_consumer.queues})
        self.cancelled = set()
        self.last_poll = self.last_recover = 0.0
        self.tick(consumer)
        self.timer_ref = consumer.timer.call_repeatedly(SCHEDULE_INTERVAL_S, self.tick, (consumer,), priority=10)

    def stop(self, consumer: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def shutdown(self, consumer: Any) -> None:
        self.stop(consumer)
        with contextlib.suppress(RedisError):
            self._jobs(consumer).store.forget_worker(consumer.hostname)

    @staticmethod
    def _jobs(consumer: Any) -> Any:
        return consumer.app.flask_app.extensions["jobs"]

    def tick(self, consumer: Any) -> None:
        jobs = self._jobs(consumer)
        config = consumer.app.flask_app.config
        now = time.monotonic()
        try:
            if now - self.last_poll >= POLL_INTERVAL_S:
                self.last_poll = now
                self._follow_pause_flags(consumer, jobs.store)
            for name in self.queues:
                if name in jobs.queues and name not in self.cancelled:
                    jobs.queues[name].promote_due()
            if now - self.last_recover >= RECOVER_INTERVAL_S:
                self.last_recover = now
                for name in self.queues:
                    if name in jobs.queues:
                        recovered = jobs.queues[name].recover(config["JOB_MAX_STALLS"], config["JOB_STALE_WAITING_MS"])
                        if recovered:
                            log.warning("jobs.recovered", extra={"queue": name, "count": recovered})
        except (RedisError, KombuOperationalError, OSError) as exc:
            # The broker or store is unreachable: the next tick tries again. Jobs
            # promoted but not published stay waiting and the recovery sweep sends them.
            log.warning("scheduler.tick_failed", extra={"error": str(exc)})

    def _follow_pause_flags(self, consumer: Any, store: Any) -> None:
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
        for name in self.queues:
            if name in paused and name not in self.cancelled:
                consumer.cancel_task_queue(name)
                self.cancelled.add(name)
                log.info("queue.paused", extra={"queue": name, "worker": consumer.hostname})
            elif name not in paused and name in self.cancelled:
                consumer.add_task_queue(name)
                self.cancelled.discard(name)
                log.info("queue.resumed", extra={"queue": name, "worker": consumer.hostname})
