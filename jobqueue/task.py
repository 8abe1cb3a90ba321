"""JobTask: the Celery task base that runs a stored job and records its whole life.

A queue's policy (jobqueue.policy.QueuePolicy) says how its jobs are retried and
ended; ``job_task(policy)`` binds a function to it as a Celery task:

    @job_task(PAYMENT_QUEUE)
    def charge_payment_task(job: Job) -> dict:
        return charge_payment(int(job.data["paymentId"]))
"""

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.worker.request import Request

from jobqueue import tracing
from jobqueue.deadline import CancelWatch, Overseer, job_deadline, past_deadline
from jobqueue.errors import JobCancelled, JobTimeout, PermanentJobError, Snooze, TransientJobError
from jobqueue.lifecycle import FINISHED
from jobqueue.masking import mask
from jobqueue.options import JobOptions
from jobqueue.policy import QueuePolicy
from jobqueue.queue import HARD_KILL_GRACE_S, Job, JobQueue, JobService, lease_ms
from jobqueue.store import JobRecord, Retention, StaleDelivery, now_ms, to_json

log = logging.getLogger("jobqueue")

# A job that waited this long in a busy pool after its fetch renews its lease before it starts.
RENEW_AFTER_WAIT_MS = 1_000
OVERSEER = Overseer()
CANCEL_WATCH = CancelWatch()


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


def service_of(task: Task) -> JobService:
    """The JobService bound to a task's Celery app."""
    return task.app.jobs


class JobRequest(Request):
    """Records hard time-limit kills, which happen in the worker's main process."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return
        task: JobTask = self.task
        service = service_of(task)
        queue = service.queue(task.queue)
        job = JobRecord.from_hash(self.args[0])
        with service.context():
            # Only while this delivery holds the job: a later delivery is not ours to fail.
            if queue.store.holds(job):
                queue.store.unseal(job)
                job.store = queue.store
                if task._cancel_asked(job):
                    task._end(queue, job, "cancelled", timeout * 1000, error=job.cancel_requested or "cancelled")
                else:
                    task.end_failed(queue, job, f"timeout: killed after {timeout:g} s", "", duration_ms=timeout * 1000)


class JobTask(Task):
    """Runs one fetched job under its delivery's token, then retries or finishes it (fenced)."""

    Request = JobRequest
    typing = False
    # Celery acks a job's request once it has ended, which frees the worker's slot for the next fetch.
    acks_late = True
    reject_on_worker_lost = True
    policy: QueuePolicy

    def __call__(self, fields: Any = None, *args: Any, **kwargs: Any) -> Any:
        service = service_of(self)
        queue = service.queue(self.queue)
        if not isinstance(fields, dict) or "token" not in fields or args or kwargs:
            # A Celery message sent straight to a job task (send_task, a stray copy): jobs are
            # taken only from the job store, under a lease, so it runs nothing.
            log.error("job.not_from_store", extra={"task": self.name, "task_id": self.request.id, "queue": queue.name})
            return None
        with service.context():
            try:
                job = queue.store.unseal(JobRecord.from_hash(fields))
            except Exception as exc:  # noqa: BLE001 - an unreadable record fails alone, the worker goes on
                return self._unreadable(queue, fields, exc)
            job.store = queue.store
            with tracing.job_span(job, queue.name, job.attempts):
                return self._run_job(queue, job)

    def _unreadable(self, queue: JobQueue, fields: dict[str, Any], exc: Exception) -> None:
        """Fail a job whose stored record cannot be read (corrupt data, a key it cannot unseal)."""
        job = JobRecord(
            id=str(fields.get("id")),
            queue=queue.name,
            name=self.name,
            state="active",
            data={},
            opts={},
            attempts=int(fields.get("attempts") or 0),
            token=str(fields.get("token")),
            processed_on=int(fields.get("processedOn") or 0) or None,
            worker=fields.get("worker"),
        )
        self._end(queue, job, "failed", 0.0, error=f"unreadable job record: {describe(exc)}")

    def _run_job(self, queue: JobQueue, job: Job) -> Any:
        timeout_ms = int(job.opts.get("timeout") or queue.defaults.timeout)
        waited = now_ms() - (job.processed_on or 0) > RENEW_AFTER_WAIT_MS
        # A job that waited in a busy pool since its fetch starts only while this delivery
        # still holds it, and gets its whole lease from now.
        if waited and not queue.store.renew(job, lease_ms(JobOptions(timeout=timeout_ms))):
            log.info("job.skipped_delivery", extra={"job_id": job.id, "queue": queue.name, "reason": "stale"})
            return None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job.started", extra={"job_id": job.id, "queue": queue.name, "attempt": job.attempts})
        started = time.perf_counter()
        seconds = timeout_ms / 1000
        watch = OVERSEER.watch(queue, job, seconds + HARD_KILL_GRACE_S)
        cancel_watch = None
        try:
            with job_deadline(seconds) as deadline:
                cancel_watch = CANCEL_WATCH.watch(queue.store, job, deadline)
                try:
                    result = self.run(job)
                except Exception as exc:
                    # An error raised once the job is past its deadline (a socket timeout cut
                    # to the time left, a check point) is its timeout, or its cancel.
                    if past_deadline() and not isinstance(exc, JobTimeout | PermanentJobError | JobCancelled):
                        timed_out = JobTimeout("ran past its timeout")
                        timed_out.__cause__ = exc
                        exc = timed_out
                    self._handle_error(queue, job, exc, started)
                    raise exc from None
        finally:
            OVERSEER.done(watch)
            CANCEL_WATCH.done(cancel_watch)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        self._end(queue, job, "completed", duration_ms, result=result)
        return result

    def _handle_error(self, queue: JobQueue, job: Job, exc: Exception, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        if isinstance(exc, Snooze):
            self._snooze(queue, job, exc, duration_ms)
            return
        pause_ms = self.policy.pause_for(exc)
        if pause_ms is not None and job.rate_limits >= self.policy.max_rate_limits:
            cap = self.policy.max_rate_limits
            reason = f"rate limited {job.rate_limits} times, the most its queue allows ({cap}): {describe(exc)}"
            self.end_failed(queue, job, reason, "", duration_ms=duration_ms)
            return
        if pause_ms is not None and not job.cancel_requested:
            # The gateway asked the queue to slow down: no job of it is taken for pause_ms,
            # and this one waits again without spending its attempt.
            if self._end(queue, job, "rate_limited", duration_ms, error=describe(exc), wait_ms=pause_ms):
                raise Retry(describe(exc), exc, when=pause_ms / 1000) from exc
            return
        if isinstance(exc, JobCancelled) or job.cancel_requested or self._cancel_asked(job):
            # Cancelled while it ran: it ends cancelled, whatever it raised, and is not retried.
            self._end(queue, job, "cancelled", duration_ms, error=job.cancel_requested or describe(exc))
            return
        reason = describe(exc)
        tb = "".join(traceback.format_exception(exc))[-4000:]
        opts = JobOptions.from_dict(job.opts)
        if self.policy.is_retryable(exc) and job.attempts < opts.attempts:
            # The retry waits in the job store's delayed set; a worker's scheduler
            # publishes it when due. This delivery ends here.
            wait_ms = opts.backoff.wait_ms(job.attempts)
            if self._end(queue, job, "delayed", duration_ms, error=reason, tb=tb, wait_ms=wait_ms):
                # Retry, not self.retry(): nothing is re-sent, Celery and Flower just see RETRY.
                raise Retry(reason, exc, when=wait_ms / 1000) from exc
            return
        self.end_failed(queue, job, reason, tb, duration_ms=duration_ms)

    @staticmethod
    def _cancel_asked(job: Job) -> bool:
        try:
            return job.is_cancelled()
        except Exception:  # noqa: BLE001 - the store is away: the finish that follows says so
            return False

    def _snooze(self, queue: JobQueue, job: Job, snooze: Snooze, duration_ms: float) -> None:
        """The task asked to run again later (Snooze): back to delayed, its attempt given back."""
        cap = self.policy.max_snoozes
        if job.snoozes >= cap:
            self.end_failed(queue, job, f"snoozed {job.snoozes} times, the most its queue allows ({cap})", "")
            return
        wait_ms = max(0, int(snooze.seconds * 1000))
        if self._end(queue, job, "snoozed", duration_ms, error=str(snooze), wait_ms=wait_ms):
            raise Retry(str(snooze), snooze, when=wait_ms / 1000) from snooze

    def end_failed(self, queue: JobQueue, job: Job, reason: str, tb: str, *, duration_ms: float = 0.0) -> None:
        """Run the policy's final-failure hook, then move the job to failed and log it.

        The hook first, so that once a job reads failed its consequences (a delivery
        row marked failed, a payment alert) are already written; and only while this
        delivery still holds the job, so a stale one cannot fail another's work.
        """
        if not queue.store.holds(job):
            self._log_stale(queue, job, "failed", duration_ms)
            return
        hook = self.policy.hook("on_final_failure")
        if hook is not None:
            try:
                hook(job, reason)
            except Exception as exc:  # noqa: BLE001 - the job must still end failed
                log.exception(
                    "job.failure_hook_failed", extra={"job_id": job.id, "queue": queue.name, "error": describe(exc)}
                )
        self._end(queue, job, "failed", duration_ms, error=reason, tb=tb)

    def _end(
        self,
        queue: JobQueue,
        job: Job,
        state: str,
        duration_ms: float,
        *,
        result: Any = None,
        error: str = "",
        tb: str = "",
        wait_ms: int = 0,
    ) -> bool:
        """End this delivery's attempt: completed, delayed (a retry after wait_ms), snoozed
        (delayed without spending the attempt), cancelled or failed.

        One fenced finish and one log line; False when the delivery no longer holds the job.
        """
        finished_at = now_ms()
        event = {
            "completed": "complete",
            "failed": "fail",
            "delayed": "retry",
            "snoozed": "snooze",
            "rate_limited": "rate_limit",
            "cancelled": "cancel",
        }[state]
        if state == "completed":
            fields = {"result": to_json(result), "finishedAt": finished_at, "failedReason": ""}
        elif state in ("failed", "cancelled"):
            fields = {"failedReason": error if state == "failed" else "", "finishedAt": finished_at}
        elif state in ("snoozed", "rate_limited"):
            fields = {}
        else:
            fields = {"failedReason": error}
        try:
            queue.store.finish(
                job,
                event,
                score=job.priority * queue.store.priority_step + finished_at
                if state == "rate_limited"
                else finished_at + wait_ms,
                throttle_ms=wait_ms if state == "rate_limited" else 0,
                retention=queue.retention_for(job, state) if state in FINISHED else Retention(),
                attempt=self._attempt(job, finished_at, duration_ms, error, tb),
                duration_ms=duration_ms,
                fields=fields,
            )
        except StaleDelivery:
            self._log_stale(queue, job, state, duration_ms)
            return False
        if job.raw is not None and job.raw.get("flowRoot") and state not in ("delayed", "snoozed", "rate_limited"):
            self._relay_flows(queue)
        line = {"job_id": job.id, "queue": queue.name, "attempt": job.attempts, "duration_ms": duration_ms}
        if state == "completed":
            log.info("job.completed", extra=line)
        elif state == "delayed":
            log.warning("job.retry", extra={**line, "error": error, "retry_in_ms": wait_ms, "data": mask(job.data)})
        elif state == "snoozed":
            log.info("job.snoozed", extra={**line, "reason": error, "snooze_ms": wait_ms})
        elif state == "rate_limited":
            log.warning("job.rate_limited", extra={**line, "reason": error, "queue_paused_ms": wait_ms})
        elif state == "cancelled":
            log.warning("job.cancelled", extra={**line, "reason": error})
        else:
            log.error("job.failed", extra={**line, "error": error, "data": mask(job.data)})
        return True

    def _relay_flows(self, queue: JobQueue) -> None:
        """A flow's job ended: tell its parents now rather than at the next housekeeping tick."""
        try:
            service_of(self).flows.relay([queue.name])
        except Exception as exc:  # noqa: BLE001 - every worker's housekeeping relays it again
            log.warning("flow.relay_failed", extra={"queue": queue.name, "error": describe(exc)})

    @staticmethod
    def _log_stale(queue: JobQueue, job: Job, state: str, duration_ms: float) -> None:
        log.warning(
            "job.stale_finish",
            extra={
                "job_id": job.id,
                "queue": queue.name,
                "attempt": job.attempts,
                "duration_ms": duration_ms,
                "refused": state,
                "token": job.token,
            },
        )

    @staticmethod
    def _attempt(job: Job, finished_at: int, duration_ms: float, error: str = "", tb: str = "") -> dict[str, Any]:
        return {
            "attempt": job.attempts,
            "startedAt": job.processed_on,
            "finishedAt": finished_at,
            "durationMs": duration_ms,
            "worker": job.worker,
            "error": error or None,
            "traceback": tb or None,
        }


def end_terminated(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
    """task_revoked, in the worker's main process: a job delivery whose pool process was
    terminated (a cancelled job that did not stop by itself) ends its job cancelled. Fenced:
    a delivery that no longer holds the job changes nothing."""
    task = sender  # request is the task's context: its args are the job's stored fields
    args = getattr(request, "args", None)
    fields = args[0] if terminated and isinstance(task, JobTask) and args else None
    if not isinstance(fields, dict) or "token" not in fields:
        return
    service = service_of(task)
    queue = service.queue(task.queue)
    job = JobRecord.from_hash(fields)
    job.store = queue.store
    with service.context():
        try:
            queue.store.unseal(job)
        except Exception:  # noqa: BLE001 - the data is only logged (masked); the end matters
            job.data = {}
        reason = queue.store.redis.hget(queue.store.keys.job(job.id, job.queue), "cancelRequested")
        if reason:
            task._end(queue, job, "cancelled", float(now_ms() - (job.processed_on or now_ms())), error=reason)


def job_task(policy: QueuePolicy, **options: Any) -> Callable[[Callable[[Job], Any]], JobTask]:
    """Declare the Celery task that runs policy's jobs: ``@job_task(PAYMENT_QUEUE)``."""

    def decorate(run: Callable[[Job], Any]) -> JobTask:
        return shared_task(base=JobTask, name=policy.task, queue=policy.name, policy=policy, **options)(run)

    return decorate
