"""The worker side of the engine, as two consumer bootsteps (Celery's extension guide, app.steps['consumer']).

``JobConsumer`` takes jobs from the job store and hands them to the worker's
pool through Celery's own task strategy (``consumer.strategies``), so a job is
a Celery request like any other: prefork, threads and solo pools,
``--concurrency``, ``--autoscale``, ``--max-tasks-per-child``, warm and cold
shutdown, ``celery inspect active|reserved`` and Flower's task events all
work, with the job id as the task id. No job travels through the broker: a
fetcher thread blocks on the store (BLPOP on the queues' wake markers) while
the worker has free slots, takes as many jobs as it has free slots with one
script (fetch.lua), and hands them to the event loop (``hub.call_soon``).

``Housekeeping`` beats the worker's heartbeat and runs the outbox relays; beside it, a
scheduler thread fires due schedules (jobqueue.schedules) every POLL_INTERVAL_S.
"""

import contextlib
import itertools
import logging
import os
import threading
import time
from typing import Any

from celery import Celery, bootsteps, signals
from redis.exceptions import RedisError

from jobqueue import celery_seams
from jobqueue.queue import HARD_KILL_GRACE_S, JobService
from jobqueue.schedules import Scheduler
from jobqueue.store import JobRecord, Retention, StaleDelivery, now_ms

log = logging.getLogger("jobqueue")

THREADED_POOLS = ("thread", "threads", "gevent", "eventlet")

# An idle worker blocks at most this long before it looks again (delays and leases
# falling due shorten it; a new job wakes it at once).
MOST_WAIT_MS = 5_000
# Heartbeats: the dashboard's worker list is this fresh.
HEARTBEAT_INTERVAL_S = 1.0
# The outbox relays run this often.
RELAY_INTERVAL_S = 2.0
# A running job cancelled this long ago that has not stopped at a check point is
# terminated by its pool (prefork), as revoke(terminate=True) would.
CANCEL_GRACE_MS = 1_500
# After the store fails, the fetcher tries again after this long, doubling up to the most.
RETRY_FIRST_S, RETRY_MOST_S = 0.1, 2.0


class Slots:
    """Jobs handed to the pool and not yet ended, kept across consumer restarts (a broker
    reconnect starts a new Fetcher while the old one's jobs still run)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.changed = threading.Condition()


class Fetcher:
    """Takes jobs from the store for one consumer, as many as its pool has free slots."""

    def __init__(self, consumer: Any, service: JobService, slots: Slots | None = None) -> None:
        self.consumer = consumer
        self.service = service
        self.store = service.store
        self.hostname = consumer.hostname
        self.messages = celery_seams.TaskMessages(consumer.app)
        self.running = True
        self.slots = slots or Slots()
        self._turn = itertools.count()
        self.thread = threading.Thread(target=self._run, name="job-fetcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        with self.slots.changed:
            self.slots.changed.notify_all()
        with contextlib.suppress(RedisError):
            self.store.wake_worker(self.hostname)  # out of its wait at once

    # -- what this worker serves -------------------------------------------------

    def queues(self) -> list[str]:
        """The job queues this worker consumes now (-Q, add_consumer, cancel_consumer)."""
        return celery_seams.served_queues(self.consumer, self.service.queues)

    def capacity(self) -> int:
        """Jobs this worker holds at once: its pool's size (or the autoscaler's most) times
        Celery's worker_prefetch_multiplier (1 by default: only what it can run now).

        With a multiplier above 1 a process finds its next job waiting when it ends one,
        instead of waiting a fetch's round trip; the cost is a job leased by a busy worker
        while an idle one could run it. A job that waits more than a second renews its lease
        before it starts.
        """
        return celery_seams.pool_size(self.consumer) * self.prefetch

    @property
    def prefetch(self) -> int:
        return max(int(self.consumer.app.conf.worker_prefetch_multiplier or 1), 1)

    def _free_slots(self) -> int:
        """Wait until enough slots are free to be worth a fetch; how many are free.

        A fetch waits for a few free slots rather than one: for a process's jobs fetched
        ahead (prefetch) until they are down to the ones running, and on a big threads pool
        for an eighth of it. A worker with room beyond that (light load) fetches at once.
        """
        slots = self.slots
        with slots.changed:
            while self.running:
                capacity = self.capacity()
                pool = max(capacity // self.prefetch, 1)
                enough = max(1, capacity - pool, pool // 8)
                free = capacity - slots.in_flight
                if free >= enough:
                    return free
                slots.changed.wait(1.0)
        return 0

    def done(self) -> None:
        """A job handed over has ended (acked or rejected): its slot is free."""
        with self.slots.changed:
            self.slots.in_flight -= 1
            self.slots.changed.notify_all()

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        pause = RETRY_FIRST_S
        while self.running:
            try:
                self._once()
                pause = RETRY_FIRST_S
            except RedisError as exc:
                # The store is away (restart, freeze, failover): look again, and again; the
                # worker never stops consuming for it.
                log.warning("fetch.failed", extra={"error": str(exc), "retry_in_s": pause})
                time.sleep(pause)
                pause = min(pause * 2, RETRY_MOST_S)
            except Exception:  # noqa: BLE001 - the fetcher must outlive any one bad turn
                log.exception("fetch.crashed")
                time.sleep(RETRY_MOST_S)

    def _once(self) -> None:
        free = self._free_slots()
        queues = self.queues()
        if not free or not queues:
            if self.running and not queues:
                time.sleep(0.5)
            return
        # Start from a different queue each turn, so no queue of this worker starves another.
        start = next(self._turn) % len(queues)
        wait_ms, full = MOST_WAIT_MS, False
        for name in queues[start:] + queues[:start]:
            if free <= 0 or not self.running:
                break
            known = self.service.queues.get(name)
            wait, jobs = self.store.fetch(
                name,
                free,
                self.hostname,
                max_stalls=self.service.max_stalls,
                most_wait_ms=MOST_WAIT_MS,
                retention=known.keep_failed if known else Retention(),
            )
            wait_ms = min(wait_ms, wait)
            if jobs:
                self._hand_over(name, jobs)
                full = full or len(jobs) == free
                free -= len(jobs)
        if full or not self.running:
            return  # the queue may hold more: take them as slots free up
        if free > 0:
            self.store.wait_for_work(queues, wait_ms / 1000, worker=self.hostname)

    # -- handing jobs to the pool ----------------------------------------------------

    def _hand_over(self, queue: str, jobs: list[JobRecord]) -> None:
        with self.slots.changed:
            self.slots.in_flight += len(jobs)
        celery_seams.call_in_loop(self.consumer, self._deliver, queue, jobs)

    def _deliver(self, queue: str, jobs: list[JobRecord]) -> None:
        """In the worker's event loop: each job becomes a Celery request through its task's strategy."""
        for job in jobs:
            try:
                if not self.running:
                    raise StaleDelivery("worker stopping")
                task = self.service.queue(queue).task_name
                timeout_s = int(job.opts.get("timeout") or 30000) / 1000
                message = self.messages.build(
                    task,
                    queue,
                    job.id,
                    job.to_fields(),
                    time_limit=timeout_s + HARD_KILL_GRACE_S,
                    retries=max(job.attempts - 1, 0),
                    priority=job.priority,
                )
                done = _Ending(self)
                celery_seams.hand_to_pool(self.consumer, task, message, done.ack, done.reject)
            except Exception as exc:  # noqa: BLE001 - hand the job back rather than lose it
                self.done()
                self._give_back(job, str(exc))

    def _give_back(self, job: JobRecord, why: str) -> None:
        try:
            self.store.release(job, reason="given_back")
            log.info("job.given_back", extra={"job_id": job.id, "queue": job.queue, "reason": why})
        except (StaleDelivery, RedisError) as exc:
            # Its lease runs out and the next fetch takes it.
            log.warning("job.give_back_failed", extra={"job_id": job.id, "queue": job.queue, "error": str(exc)})


class _Ending:
    """A handed-over job's ack and reject (Celery calls one of them once): frees its slot."""

    __slots__ = ("fetcher", "ended")

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self.ended = False

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.fetcher.done()

    def ack(self, *args: Any, **kwargs: Any) -> None:
        self._end()

    def reject(self, *args: Any, **kwargs: Any) -> None:
        # Its pool process died (reject_on_worker_lost): the job stays active under this
        # delivery's lease, and the next fetch after the lease takes it again.
        self._end()


class JobConsumer(bootsteps.StartStopStep):
    """Feeds the pool from the job store while the consumer runs."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.fetcher: Fetcher | None = None
        self.slots = Slots()

    def start(self, consumer: Any) -> None:
        self.fetcher = Fetcher(consumer, consumer.app.jobs, self.slots)
        self.fetcher.start()

    def stop(self, consumer: Any) -> None:
        if self.fetcher is not None:
            self.fetcher.stop()
            self.fetcher = None

    def shutdown(self, consumer: Any) -> None:
        self.stop(consumer)


class Housekeeping(bootsteps.StartStopStep):
    """Heartbeats (the dashboard's worker list) and the outbox relays, in a thread of their own:
    a relay's SQL must never hold up the event loop that hands jobs to the pool."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_relay = 0.0
        self.queues: list[str] = []
        self.terminated: set[str] = set()  # requests already told to stop

    def start(self, consumer: Any) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(consumer, self.stopped), name="job-housekeeping")
        self.thread.daemon = True
        self.thread.start()
        if consumer.app.jobs.run_scheduler:
            # Its own loop, every 0.5 s (a tick fires within that of its time): the heartbeat's
            # second and a relay's SQL must not delay it. Any number of workers run one.
            scheduler = Scheduler(consumer.app.jobs)
            threading.Thread(target=scheduler.run, args=(self.stopped,), name="job-scheduler", daemon=True).start()

    def _run(self, consumer: Any, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                self.tick(consumer)
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("housekeeping.crashed")
            stopped.wait(HEARTBEAT_INTERVAL_S)

    def stop(self, consumer: Any) -> None:
        self.stopped.set()

    def shutdown(self, consumer: Any) -> None:
        self.stop(consumer)
        with contextlib.suppress(RedisError):
            consumer.app.jobs.store.forget_worker(consumer.hostname)

    def tick(self, consumer: Any) -> None:
        jobs: JobService = consumer.app.jobs
        queues = sorted(celery_seams.served_queues(consumer, jobs.queues))
        try:
            if queues != self.queues:
                # add_consumer / cancel_consumer: the fetcher waits on the old queues; wake it.
                if self.queues:
                    jobs.store.wake_worker(consumer.hostname)
                self.queues = queues
            jobs.store.heartbeat(
                consumer.hostname,
                {
                    "queues": queues,
                    "paused": sorted(jobs.store.paused_queues(queues)),
                    "pid": os.getpid(),
                    "concurrency": celery_seams.pool_size(consumer) if consumer.pool else None,
                },
            )
            self.stop_cancelled(consumer, jobs)
            jobs.flows.relay()  # a flow's children that ended tell their parents (jobqueue.flows)
            now = time.monotonic()
            if jobs.relays and now - self.last_relay >= RELAY_INTERVAL_S:
                self.last_relay = now
                with jobs.context():
                    for relay in jobs.relays:
                        relay()
        except (RedisError, OSError) as exc:
            log.warning("housekeeping.failed", extra={"error": str(exc)})

    def stop_cancelled(self, consumer: Any, jobs: JobService) -> None:
        """Terminate the running jobs of this worker that were cancelled and did not stop
        by themselves within CANCEL_GRACE_MS (one read per running job, once a second).
        The terminated delivery then ends its job cancelled (jobqueue.task.end_terminated)."""
        terminable = {q.task_name for q in jobs.queues.values() if q.policy.terminate_on_cancel}
        running = [
            r
            for r in celery_seams.running_requests()
            if r.task_name in terminable and r.id not in self.terminated and isinstance(_job_fields(r), dict)
        ]
        if not running:
            self.terminated.clear()
            return
        with jobs.store.redis.pipeline(transaction=False) as pipe:
            for request in running:
                fields = _job_fields(request)
                pipe.hget(jobs.store.keys.job(fields["id"], fields["queue"]), "cancelRequestedAt")
            asked = pipe.execute()
        now = now_ms()
        for request, at in zip(running, asked, strict=True):
            if at and now - int(at) >= CANCEL_GRACE_MS:
                self.terminated.add(request.id)
                celery_seams.call_in_loop(consumer, self._terminate, consumer, request)

    @staticmethod
    def _terminate(consumer: Any, request: Any) -> None:
        if celery_seams.terminate(consumer, request):
            log.warning("job.terminated", extra={"job_id": request.id, "reason": "cancelled"})


def _job_fields(request: Any) -> Any:
    args = request.args
    return args[0] if args else None


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
    """The engine's bootsteps, and settings a worker of celery takes at start-up, before its pool starts.

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
    from jobqueue.task import end_terminated

    signals.task_revoked.connect(end_terminated, weak=False)
    celery.steps["consumer"].add(JobConsumer)
    celery.steps["consumer"].add(Housekeeping)
