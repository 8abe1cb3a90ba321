"""Job timeouts that cannot wedge a worker.

Nothing is ever raised into a running thread from outside (no signal handler,
no PyThreadState_SetAsyncExc): an exception that lands at an arbitrary point can
leave a lock held (logging's, the import lock) and poison the whole process.
Instead:

- a job's deadline is kept per thread; ``checkpoint()`` raises JobTimeout at
  safe points, and network clients cut their socket timeouts to
  ``job_time_left()``, so a job blocked on I/O returns by its deadline;
- an error raised once the deadline has passed is reported as the timeout;
- past the hard limit (timeout + grace) a prefork child is killed by Celery's
  hard time limit, and the pool replaces it. In a threads or solo pool the
  Overseer hands the stuck job's lease back (fenced by its token) so another
  worker runs it, and recycles the process through a warm shutdown, its
  supervisor starting a fresh one. The stuck thread is never poisoned.
"""

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jobqueue.errors import JobTimeout

log = logging.getLogger("jobqueue")

_local = threading.local()
# How often the Overseer looks; a gap much longer than this means the whole process
# was stopped (SIGSTOP, a VM pause), not that its jobs were stuck.
OVERSEE_INTERVAL_S = 0.5
# After such a gap, jobs get this long to finish before they count as stuck.
WAKE_GRACE_S = 5.0
# A warm shutdown that has not ended after this long ends the process.
RECYCLE_DEADLINE_S = 30.0


class Deadline:
    """A running job's deadline (time.monotonic()), which another thread may cut short (cancel)."""

    __slots__ = ("at", "interrupts")

    def __init__(self, at: float) -> None:
        self.at = at
        # Callables that unblock what the job waits on now (interruptible()): run by cut().
        self.interrupts: list[Callable[[], None]] = []

    def cut(self) -> None:
        """End it now: the job's next check point or socket wait raises JobTimeout, and a wait
        under interruptible() is broken off at once."""
        self.at = min(self.at, time.monotonic())
        for interrupt in list(self.interrupts):
            try:
                interrupt()
            except Exception as exc:  # noqa: BLE001 - the deadline stands; the wait ends by its timeout
                log.warning("job.interrupt_failed", extra={"error": str(exc)})


@contextmanager
def interruptible(interrupt: Callable[[], None]) -> Iterator[None]:
    """While inside, a cut of the running job's deadline (its cancel) also calls interrupt,
    which should break off a blocking wait: shut a socket down, say. The wait then raises
    (OSError), and the job, past its deadline, ends as cancelled. Nothing outside a job."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        yield
        return
    deadline.interrupts.append(interrupt)
    try:
        yield
    finally:
        deadline.interrupts.remove(interrupt)


def job_time_left() -> float | None:
    """Seconds until the running job's deadline, in the job's own thread; None outside a job."""
    deadline = getattr(_local, "deadline", None)
    return None if deadline is None else max(0.0, deadline.at - time.monotonic())


def past_deadline() -> bool:
    """Whether the running job (in this thread) is past its deadline."""
    left = job_time_left()
    return left is not None and left <= 0


def checkpoint() -> None:
    """A safe point: raise JobTimeout if the running job is past its deadline."""
    if past_deadline():
        raise JobTimeout("ran past its timeout")


@contextmanager
def job_deadline(seconds: float | None) -> Iterator[Deadline | None]:
    """Set the running job's deadline for this thread; yields it (None without a timeout)."""
    if not seconds:
        yield None
        return
    _local.deadline = Deadline(time.monotonic() + seconds)
    try:
        yield _local.deadline
    finally:
        _local.deadline = None


@dataclass
class _Watch:
    queue: Any
    job: Any
    hard_at: float
    released: bool = False


class Overseer:
    """Watches the jobs of a threads or solo pool; releases and recycles, never raises into them."""

    def __init__(self) -> None:
        self.enabled = False  # set by the worker for pools without Celery's hard time limit
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._thread: threading.Thread | None = None
        self._recycling = False

    def watch(self, queue: Any, job: Any, hard_limit_s: float) -> _Watch | None:
        if not self.enabled:
            return None
        entry = _Watch(queue, job, time.monotonic() + hard_limit_s)
        with self._lock:
            self._watches[id(entry)] = entry
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-overseer", daemon=True)
                self._thread.start()
        return entry

    def done(self, entry: _Watch | None) -> None:
        if entry is not None:
            with self._lock:
                self._watches.pop(id(entry), None)

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            time.sleep(OVERSEE_INTERVAL_S)
            now = time.monotonic()
            woke = now - last > OVERSEE_INTERVAL_S * 4 + 1
            last = now
            with self._lock:
                entries = list(self._watches.values())
            for entry in entries:
                if woke:
                    # The process itself was stopped: its jobs were not stuck, they were frozen.
                    entry.hard_at = max(entry.hard_at, now + WAKE_GRACE_S)
                elif now >= entry.hard_at:
                    self._stuck(entry, now)

    def _stuck(self, entry: _Watch, now: float) -> None:
        from jobqueue.store import StaleDelivery

        job, queue = entry.job, entry.queue
        if not entry.released:
            entry.released = True
            try:
                queue.store.release(job)
            except StaleDelivery:
                # Another delivery holds the job already; ours will be refused when it ends.
                log.warning("job.stuck_orphaned", extra={"job_id": job.id, "queue": queue.name})
            except Exception as exc:  # noqa: BLE001 - the next look tries again
                entry.released = False
                log.warning("job.release_failed", extra={"job_id": job.id, "queue": queue.name, "error": str(exc)})
                return
            else:
                # Back to waiting: the next fetch, here or on another worker, takes it.
                log.error("job.stuck_released", extra={"job_id": job.id, "queue": queue.name, "attempt": job.attempts})
            # Give it one more hard interval to return before the process is recycled.
            entry.hard_at = now + max(WAKE_GRACE_S, 1.0)
            return
        self.recycle(f"job {job.id} is still running past its hard limit")

    def recycle(self, reason: str) -> None:
        """Ask this worker process to shut down warmly; its supervisor starts a fresh one."""
        if self._recycling:
            return
        self._recycling = True
        log.error("worker.recycling", extra={"reason": reason, "pid": os.getpid()})
        os.kill(os.getpid(), signal.SIGTERM)
        timer = threading.Timer(RECYCLE_DEADLINE_S, os._exit, args=(75,))
        timer.daemon = True
        timer.start()


# How often the cancel watch asks the store about the jobs running in this process.
CANCEL_WATCH_INTERVAL_S = 0.5


class CancelWatch:
    """Stops the running jobs of this process that were cancelled, at their next safe point.

    One thread per process (each prefork child, a threads pool's process), awake only
    while jobs run: every CANCEL_WATCH_INTERVAL_S it reads the cancel flag of each
    running job in one round trip per queue, and cuts a cancelled job's deadline, so the
    job's own check points and socket timeouts end it (JobTimeout), as its timeout would.
    Nothing is raised into the job's thread from outside.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, tuple[Any, Any, Deadline]] = {}
        self._thread: threading.Thread | None = None

    def watch(self, store: Any, job: Any, deadline: Deadline | None) -> int | None:
        if deadline is None:
            return None
        key = id(deadline)
        with self._lock:
            self._watches[key] = (store, job, deadline)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-cancel-watch", daemon=True)
                self._thread.start()
        return key

    def done(self, key: int | None) -> None:
        if key is not None:
            with self._lock:
                self._watches.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(CANCEL_WATCH_INTERVAL_S)
            with self._lock:
                entries = list(self._watches.values())
            if not entries:
                continue
            try:
                self._look(entries)
            except Exception as exc:  # noqa: BLE001 - the next look tries again
                log.warning("job.cancel_watch_failed", extra={"error": str(exc)})

    @staticmethod
    def _look(entries: list[tuple[Any, Any, Deadline]]) -> None:
        store = entries[0][0]
        with store.redis.pipeline(transaction=False) as pipe:
            for _, job, _ in entries:
                pipe.hget(store.keys.job(job.id, job.queue), "cancelRequested")
            flags = pipe.execute()
        for (_, job, deadline), reason in zip(entries, flags, strict=True):
            if reason:
                job.cancel_requested = reason
                deadline.cut()
