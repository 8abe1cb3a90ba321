"""A worker bootstep: the scheduler of delayed jobs, stalled-job and lost-message recovery,
heartbeats, prefetch claims, pause/resume and the outbox relays; and the worker's start-up settings."""

import contextlib
import logging
import os
import time
from typing import Any

from celery import Celery, bootsteps, signals
from celery.worker import state as worker_state
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from jobqueue.store import now_ms

log = logging.getLogger("jobqueue")
THREADED_POOLS = ("thread", "threads", "gevent", "eventlet")

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
        self.last_relay = 0.0

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
        return consumer.app.jobs

    def tick(self, consumer: Any) -> None:
        jobs = self._jobs(consumer)
        now = time.monotonic()
        try:
            if now - self.last_poll >= POLL_INTERVAL_S:
                self.last_poll = now
                self._follow_pause_flags(consumer, jobs.store)
                self._claim_prefetched(jobs)
            for name in self.queues:
                if name in jobs.queues and name not in self.cancelled:
                    jobs.queues[name].promote_due()
            if now - self.last_recover >= RECOVER_INTERVAL_S:
                self.last_recover = now
                for name in self.queues:
                    if name in jobs.queues:
                        recovered = jobs.queues[name].recover(jobs.max_stalls, jobs.lost_after_ms)
                        if recovered:
                            log.warning("jobs.recovered", extra={"queue": name, "count": recovered})
            if jobs.relays and now - self.last_relay >= RECOVER_INTERVAL_S:
                self.last_relay = now
                with jobs.context():
                    for relay in jobs.relays:
                        relay()
        except (RedisError, KombuOperationalError, OSError) as exc:
            # The broker or store is unreachable: the next tick tries again. Jobs
            # promoted but not published stay waiting and the recovery sweep sends them.
            log.warning("scheduler.tick_failed", extra={"error": str(exc)})

    def _claim_prefetched(self, jobs: Any) -> None:
        """Claim the waiting jobs held in this worker's prefetch buffer, so the lost-message
        sweep leaves them be while this worker lives (claims lapse after three polls)."""
        active = {request.id for request in worker_state.active_requests}
        held: dict[str, list[str]] = {}
        for request in list(worker_state.reserved_requests):
            if request.id in active:
                continue
            queue = (request.delivery_info or {}).get("routing_key")
            first = request.args[0] if request.args else None
            ids = [str(d[0]) for d in first] if isinstance(first, list) else [str(first)]
            held.setdefault(queue, []).extend(ids)
        until = now_ms() + int(POLL_INTERVAL_S * 3000)
        for queue, ids in held.items():
            if queue in jobs.queues:
                jobs.store.claim(queue, ids, until)

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


def worker_parallelism(options: dict[str, Any], conf: Any) -> tuple[str, int]:
    """The pool name and the most jobs a worker may run at once, from its options and settings."""
    pool = options.get("pool") or options.get("pool_cls") or conf.worker_pool
    name = pool.__module__.rsplit(".", 1)[-1] if isinstance(pool, type) else str(pool).rsplit(":", 1)[-1]
    most = int(options.get("concurrency") or conf.worker_concurrency or 0)
    autoscale = options.get("autoscale")  # (max, min) from --autoscale
    if autoscale:
        bounds = autoscale if isinstance(autoscale, list | tuple) else str(autoscale).split(",")
        most = max(most, *(int(b) for b in bounds))
    return name.lower(), most


def configure_worker(celery: Celery, on_init: Any = None) -> None:
    """Settings a worker of celery takes at start-up, before its pool starts.

    Pools without Celery's hard time limit (threads, solo) get the Overseer; Celery's
    own per-task INFO lines (received, succeeded) are off unless CELERY_TASK_LOG is
    set, since the engine logs one structured line per finished attempt.
    on_init(pool, most) lets the app size its resources (a SQL pool per thread).
    """

    def on_worker_init(sender: Any = None, instance: Any = None, options: Any = None, **_: Any) -> None:
        if instance is None or instance.app is not celery:
            return
        from jobqueue.task import OVERSEER

        pool, most = worker_parallelism(options or {}, celery.conf)
        OVERSEER.enabled = pool in (*THREADED_POOLS, "solo")
        if os.environ.get("CELERY_TASK_LOG", "").lower() not in ("1", "true", "yes"):
            for name in ("celery.worker.strategy", "celery.app.trace"):
                logging.getLogger(name).setLevel(logging.WARNING)
        if on_init is not None:
            on_init(pool, most)

    signals.celeryd_init.connect(on_worker_init, weak=False)
    celery.steps["consumer"].add(QueueControl)
