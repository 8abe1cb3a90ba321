"""JobTask: the Celery task base that runs a stored job and records its whole life."""

import ctypes
import logging
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from celery.worker.request import Request
from flask import Flask, has_app_context
from marshmallow import Schema
from redis.exceptions import RedisError

from rideshare.jobs.masking import mask
from rideshare.jobs.options import Backoff, JobOptions
from rideshare.jobs.queue import HARD_KILL_GRACE_S, Job, JobQueue, get_queue
from rideshare.jobs.store import FINISHED, now_ms, to_json

log = logging.getLogger("rideshare.jobs")

PAUSED_REQUEUE_DELAY_S = 0.5


class PermanentJobError(Exception):
    """An error that retrying cannot fix: the job fails at once."""


class TransientJobError(Exception):
    """An error worth another attempt after the backoff."""


class JobTimeout(Exception):
    """The job ran past its timeout option."""


class ThreadJobTimeout(JobTimeout):
    """JobTimeout raised inside a pool thread by the watchdog (raised as a class, so no arguments)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("ran past its timeout",)))


class Watchdog:
    """One thread that raises ThreadJobTimeout in job threads that run past their deadline.

    For the threads pool, where neither SIGALRM nor Celery's time limits reach a
    job. The exception is set with PyThreadState_SetAsyncExc, so it is raised at
    the thread's next Python instruction: a job blocked in a socket call sees it
    when the call returns, which the SMTP and Stripe timeouts bound.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._armed: dict[int, float] = {}  # thread id -> deadline (monotonic)
        self._fired: set[int] = set()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        ident = threading.get_ident()
        with self._lock:
            self._armed[ident] = time.monotonic() + seconds
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-watchdog", daemon=True)
                self._thread.start()
            self._wake.notify()
        return ident

    def disarm(self, ident: int) -> None:
        with self._lock:
            self._armed.pop(ident, None)
            if ident in self._fired:
                # Fired as the job was finishing: drop the exception if it is still pending.
                self._fired.discard(ident)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for ident, deadline in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[ident]
                        self._fired.add(ident)
                        exc = ctypes.py_object(ThreadJobTimeout)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), exc)
                next_deadline = min(self._armed.values(), default=now + 60)
                self._wake.wait(max(0.01, next_deadline - now))


WATCHDOG = Watchdog()
_deadline = threading.local()


def job_time_left() -> float | None:
    """Seconds until the running job's timeout, in the job's own thread; None outside a time limit.

    A job blocked in a socket call in a pool thread sees its JobTimeout only when
    the call returns, so network clients bound their own timeouts by this.
    """
    deadline = getattr(_deadline, "at", None)
    return None if deadline is None else max(0.0, deadline - time.monotonic())


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise JobTimeout in the job's code once seconds have passed.

    In a process's main thread (prefork, solo) our own SIGALRM timer, armed
    only around the job's code, instead of Celery's soft time limit: that
    one is a signal the pool sends whenever the limit falls, and if it lands
    while the pool process is writing a result to its parent the pipe is
    left torn and the worker exits (billiard UnpicklingError). The hard time
    limit stays as a backstop there. In a pool thread, the Watchdog.
    """
    if not seconds:
        yield
        return
    _deadline.at = time.monotonic() + seconds
    timer = _watchdog(seconds) if threading.current_thread() is not threading.main_thread() else _alarm(seconds)
    try:
        with timer:
            yield
    finally:
        _deadline.at = None


@contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    ident = WATCHDOG.arm(seconds)
    try:
        yield
    finally:
        WATCHDOG.disarm(ident)


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise JobTimeout(f"ran past its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def describe(exc: BaseException) -> str:
    """A one-line failure reason for the job record."""
    if isinstance(exc, JobTimeout):
        return f"timeout: {exc}"
    if isinstance(exc, SoftTimeLimitExceeded):
        return "timeout: job ran past its time limit"
    if isinstance(exc, PermanentJobError | TransientJobError) and str(exc):
        return str(exc)[:500]
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:500]


class JobRequest(Request):
    """Records hard time-limit kills, which happen in the worker's main process."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return  # the job's own timer (time_limit) raises JobTimeout inside it
        task: JobTask = self.task
        with task.app_context():
            queue = get_queue(task.queue)
            job = queue.store.get(self.id)
            if job is not None and job.state == "active":
                task.record_failure(
                    queue,
                    job,
                    f"timeout: killed after {timeout:g} s",
                    "",
                    final=True,
                    duration_ms=timeout * 1000,
                )


class JobTask(Task):
    """Runs one stored job: loads it, marks it active, retries or finishes it.

    Subclasses (via the task decorator) declare their policy:
    ``attempts`` and ``backoff`` are the queue's defaults for new jobs (None:
    the app's JOB_RETRY_ATTEMPTS / JOB_RETRY_DELAY), ``retry_on`` names the
    exceptions that earn another attempt; every other error fails at once.
    """

    Request = JobRequest
    typing = False
    attempts: int | None = None
    backoff: Backoff = Backoff()
    retry_on: tuple[type[BaseException], ...] = ()
    data_schema: type[Schema] | None = None
    # Most jobs one broker message may carry (JobQueue.add_bulk, the scheduler's
    # promotions). Jobs in one message run one after the other in one worker
    # process, so only short CPU-light jobs gain from more than 1.
    batch_size: int = 1

    def app_context(self) -> AbstractContextManager[Any]:
        """The Flask app context, entered only when none is active.

        A task called from inside a request or another task must reuse that
        context: pushing a second one would give it a separate DB session.
        """
        if has_app_context():
            return nullcontext()
        flask_app: Flask = self.app.flask_app
        return flask_app.app_context()

    def default_options(self, config: dict[str, Any]) -> JobOptions:
        """This queue's job defaults, from the decorator and the app config."""
        return JobOptions(
            attempts=self.attempts or config["JOB_RETRY_ATTEMPTS"],
            backoff=Backoff(self.backoff.type, self.backoff.delay or config["JOB_RETRY_DELAY"]),
            timeout=config["JOB_TIMEOUT"],
        )

    def on_final_failure(self, job: Job, reason: str) -> None:
        """Called once when a job has failed for good."""

    def on_manual_retry(self, job: Job, data: dict[str, Any]) -> None:
        """Called before an operator's retry puts a failed job back in its queue."""

    def __call__(self, job_id: str | list[list[Any]], seq: int | None = None) -> Any:
        with self.app_context():
            if isinstance(job_id, list):
                return self._run_batch(get_queue(self.queue), job_id)
            return self._run_job(get_queue(self.queue), job_id, seq)

    def _run_batch(self, queue: JobQueue, deliveries: list[list[Any]]) -> int:
        """Run a message's jobs in turn, each with its own state, timeout and retries; returns how many ran."""
        for index, (job_id, seq, timeout_ms) in enumerate(deliveries):
            try:
                self._run_job(queue, job_id, seq, timeout_ms)
            except Reject:
                # Paused: this job and the rest wait in the delayed set and are
                # published again, one scheduler tick after the queue resumes.
                queue.store.defer([d[0] for d in deliveries[index:]], queue.name, int(PAUSED_REQUEUE_DELAY_S * 1000))
                return index
            except RedisError:
                raise  # the job store is gone: the rest stay waiting, and the stale-waiting sweep sends them again
            except Exception:  # noqa: BLE001 - a retry or failure, already recorded in the job store
                continue
        return len(deliveries)

    def _run_job(self, queue: JobQueue, job_id: str, seq: int | None, timeout_ms: int | None = None) -> Any:
        if timeout_ms is None:
            # The message's hard time limit is the job's timeout option plus the grace.
            hard_s = (self.request.timelimit or (None, None))[0]
            timeout_ms = int((hard_s - HARD_KILL_GRACE_S) * 1000) if hard_s else queue.defaults.timeout
        lease_ms = queue.lease_ms(JobOptions(timeout=timeout_ms))
        job = queue.store.start(job_id, queue.name, worker=self.request.hostname or "", seq=seq, lease_ms=lease_ms)
        if job in ("stale", "leased"):
            # An older delivery (stale), or a copy of one that may still be running
            # (leased): the job's latest delivery, or the lease sweep, runs it.
            log.info("job.skipped_delivery", extra={"job_id": job_id, "queue": queue.name, "reason": job})
            return None
        if job == "paused":
            # Hand the message back; the worker stops consuming a paused queue
            # within a poll interval, so it waits in the broker until resumed.
            time.sleep(PAUSED_REQUEUE_DELAY_S)
            raise Reject("queue paused", requeue=True)
        if job is None:
            log.warning("job.missing", extra={"job_id": job_id, "queue": queue.name})
            return None
        if job.state in FINISHED:
            log.info("job.duplicate_delivery", extra={"job_id": job_id, "queue": queue.name})
            return job.result
        log.info(
            "job.started",
            extra={"job_id": job.id, "queue": queue.name, "task": self.name, "attempt": job.attempts},
        )
        started = time.perf_counter()
        try:
            with time_limit(timeout_ms / 1000):
                result = self.run(job)
        except Exception as exc:
            self._handle_error(queue, job, exc, started)
            raise
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        finished_at = now_ms()
        queue.store.finish(
            job,
            "completed",
            score=finished_at,
            retention=queue.retention_for(job, "completed"),
            attempt=self._attempt(job, finished_at, duration_ms),
            duration_ms=duration_ms,
            fields={"result": to_json(result), "finishedAt": finished_at, "failedReason": ""},
        )
        log.info(
            "job.completed",
            extra={"job_id": job.id, "queue": queue.name, "attempt": job.attempts, "duration_ms": duration_ms},
        )
        return result

    def _handle_error(self, queue: JobQueue, job: Job, exc: Exception, started: float) -> None:
        reason = describe(exc)
        tb = "".join(traceback.format_exception(exc))[-4000:]
        opts = JobOptions.from_dict(job.opts)
        retryable = not isinstance(exc, PermanentJobError) and isinstance(
            exc, (TransientJobError, JobTimeout, SoftTimeLimitExceeded, *self.retry_on)
        )
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        if retryable and job.attempts < opts.attempts:
            wait_ms = opts.backoff.wait_ms(job.attempts)
            finished_at = now_ms()
            # The retry waits in the job store's delayed set; a worker's scheduler
            # publishes it when due. This delivery ends here (and is acked).
            queue.store.finish(
                job,
                "delayed",
                score=finished_at + wait_ms,
                attempt=self._attempt(job, finished_at, duration_ms, reason, tb),
                duration_ms=duration_ms,
                fields={"failedReason": reason},
            )
            log.warning(
                "job.retry",
                extra={
                    "job_id": job.id,
                    "queue": queue.name,
                    "attempt": job.attempts,
                    "error": reason,
                    "retry_in_ms": wait_ms,
                    "duration_ms": duration_ms,
                    "data": mask(job.data),
                },
            )
            # Retry, not self.retry(): nothing is re-sent, Celery and Flower just see RETRY.
            raise Retry(reason, exc, when=wait_ms / 1000) from exc
        self.record_failure(queue, job, reason, tb, final=True, duration_ms=duration_ms)

    def record_failure(
        self, queue: JobQueue, job: Job, reason: str, tb: str, *, final: bool, duration_ms: float = 0.0
    ) -> None:
        """Run the task's final-failure hook, then move the job to failed and log it.

        The hook first, so that once a job reads failed its consequences (a delivery
        row marked failed, a payment alert) are already written.
        """
        if final:
            try:
                self.on_final_failure(job, reason)
            except Exception as exc:  # noqa: BLE001 - the job must still end failed
                log.exception(
                    "job.failure_hook_failed", extra={"job_id": job.id, "queue": queue.name, "error": describe(exc)}
                )
        finished_at = now_ms()
        queue.store.finish(
            job,
            "failed",
            score=finished_at,
            retention=queue.retention_for(job, "failed"),
            attempt=self._attempt(job, finished_at, duration_ms, reason, tb),
            duration_ms=duration_ms,
            fields={"failedReason": reason, "finishedAt": finished_at},
        )
        log.error(
            "job.failed",
            extra={
                "job_id": job.id,
                "queue": queue.name,
                "task": self.name,
                "attempt": job.attempts,
                "error": reason,
                "duration_ms": duration_ms,
                "data": mask(job.data),
            },
        )

    def _attempt(self, job: Job, finished_at: int, duration_ms: float, error: str = "", tb: str = "") -> dict[str, Any]:
        return {
            "attempt": job.attempts,
            "startedAt": job.processed_on,
            "finishedAt": finished_at,
            "durationMs": duration_ms,
            "worker": job.worker,
            "error": error or None,
            "traceback": tb or None,
        }
