"""The app's job queues in the original design's vocabulary: add_email_job, get_job, get_job_counts.

The engine is jobqueue; these functions find the queues bound to the current Flask app.
A job that belongs to a SQL row is staged in that row's transaction (stage_job) and
published right after the commit (publish_job); see jobqueue.outbox.
"""

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import current_app
from sqlalchemy.orm import Session

from jobqueue import InvalidJobData, Job, JobQueue, JobService, QueueUnavailable
from jobqueue.outbox import Outbox, StagedJob
from jobqueue.schedules import Schedule, Schedules
from rideshare.db import get_db


def _service() -> JobService:
    return current_app.extensions["jobs"]


def get_queue(name: str) -> JobQueue:
    """The queue called name (email, analytics or payment)."""
    return _service().queues[name]


def add_email_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue an email: data has to, subject, text and optionally html."""
    return get_queue("email").add(data, **options)


def add_analytics_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue an analytics event: data has event, eventId and the event's fields."""
    return get_queue("analytics").add(data, **options)


def add_analytics_jobs(items: Sequence[Mapping[str, Any]], **options: Any) -> list[Job]:
    """Queue many analytics events at once (JobQueue.add_bulk)."""
    return get_queue("analytics").add_bulk(items, **options)


def add_payment_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue a payment charge: data has paymentId, the SQL row to charge."""
    return get_queue("payment").add(data, **options)


def get_schedules() -> Schedules:
    """The app's schedules: the engine's face (jobqueue.schedules.Schedules)."""
    return Schedules(_service())


def upsert_schedule(
    schedule_id: str,
    *,
    job: Mapping[str, Any],
    every_ms: int | None = None,
    cron: str | None = None,
    tz: str | None = None,
    missed: str = "run_once",
) -> Schedule:
    """Create or replace a recurring job: every every_ms, or at cron's times in tz (daylight
    saving followed); job is {"queue", "name", "data", "options"}, checked as an add checks it
    (InvalidJobData, InvalidJobOptions). missed: run_once or skip (README, "Schedules")."""
    return get_schedules().upsert(schedule_id, every_ms=every_ms, cron=cron, tz=tz, job=job, missed=missed)


def remove_schedule(schedule_id: str) -> Schedule:
    """Delete a schedule (the jobs it made stay); ScheduleNotFound."""
    return get_schedules().remove(schedule_id)


def pause_schedule(schedule_id: str) -> Schedule:
    """No tick of the schedule fires until resume_schedule; ScheduleNotFound."""
    return get_schedules().set_paused(schedule_id, True)


def resume_schedule(schedule_id: str) -> Schedule:
    """Fire again, from the first tick after now; ScheduleNotFound."""
    return get_schedules().set_paused(schedule_id, False)


def get_schedule(schedule_id: str) -> Schedule | None:
    """One schedule with its history (newest first), or None."""
    return get_schedules().get(schedule_id)


def list_schedules() -> list[Schedule]:
    """Every schedule, by id, with its history."""
    return get_schedules().list_all()


def _outbox() -> Outbox:
    return current_app.extensions["outbox"]


def stage_job(session: Session, queue: str, data: Mapping[str, Any], *, job_id: str, **options: Any) -> StagedJob:
    """Write a job into session's transaction (checked as add checks it); publish_job it after the commit."""
    return _outbox().stage(session, queue, data, job_id=job_id, **options)


def publish_job(staged: StagedJob) -> Job:
    """Queue a committed staged job; QueueUnavailable leaves it staged (withdraw_job, or the relay)."""
    _fault_exit_after_commit()
    return _outbox().publish(staged)


def publish_or_undo(staged: StagedJob, undo: Callable[[Session], None]) -> Job | None:
    """Queue a committed staged job; if the queue refuses it, unstage it and undo its rows.

    undo(session) deletes or reverts the rows written with the job; it runs in the same
    transaction as the unstaging, so both happen or neither. If a relay queued the job
    meanwhile, the rows stand and the job is returned. Otherwise QueueUnavailable is
    raised, and nothing of the request is left.
    """
    try:
        return publish_job(staged)
    except QueueUnavailable:
        with get_db().session() as session:
            undone = withdraw_job(session, staged.job_id)
            if undone:
                undo(session)
        if undone:
            raise
        return get_job(staged.job_id)


def publish_left_behind(job_id: str) -> Job | None:
    """Queue the staged job job_id if its request died before publishing it; None if it is not staged."""
    return _outbox().publish_left_behind(job_id)


def withdraw_job(session: Session, job_id: str) -> bool:
    """Unstage a job in session's transaction, to undo its row too; False if a relay queued it meanwhile."""
    return _outbox().withdraw(session, job_id)


# A test hook for the outbox kill test (tests/faults/test_outbox.py): with
# RIDESHARE_FAULT_EXIT_AFTER_COMMIT=N the process ends on every Nth publish, between
# the commit and the publish, as a SIGKILL would end it. Unset, it costs one comparison.
_EXIT_EVERY = int(os.environ.get("RIDESHARE_FAULT_EXIT_AFTER_COMMIT") or 0)
_publishes = itertools.count(1)


def _fault_exit_after_commit() -> None:
    if _EXIT_EVERY and next(_publishes) % _EXIT_EVERY == 0:
        os._exit(70)


def get_job(job_id: str) -> Job | None:
    """Any queue's job by id, or None if there is no such job."""
    return _service().store.get(job_id)


def get_job_counts(queue: str) -> dict[str, int]:
    """Jobs per state in one queue."""
    return get_queue(queue).get_job_counts()


def cancel_job(job_id: str, reason: str = "cancelled") -> str | None:
    """Cancel any queue's job: 'cancelled' (it will never run), 'cancelling' (it runs and is
    asked to stop), the finished state it is in (left alone), or None if there is no such job."""
    job = get_job(job_id)
    if job is None:
        return None
    return get_queue(job.queue).cancel(job_id, reason)


def wait_until_finished(job_id: str, timeout: float) -> Job:
    """Block until any queue's job is completed, failed, cancelled or expired.

    Reads the queue's event stream (no polling); TimeoutError after timeout seconds,
    LookupError if there is no such job.
    """
    job = get_job(job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found")
    return get_queue(job.queue).wait_until_finished(job_id, timeout)


__all__ = [
    "InvalidJobData",
    "Job",
    "JobQueue",
    "QueueUnavailable",
    "StagedJob",
    "add_analytics_job",
    "add_analytics_jobs",
    "add_email_job",
    "add_payment_job",
    "cancel_job",
    "get_job",
    "get_job_counts",
    "get_queue",
    "get_schedule",
    "get_schedules",
    "list_schedules",
    "pause_schedule",
    "publish_job",
    "publish_left_behind",
    "publish_or_undo",
    "remove_schedule",
    "resume_schedule",
    "stage_job",
    "upsert_schedule",
    "wait_until_finished",
    "withdraw_job",
]
