"""Operator actions on jobs and queues, shared by the admin API, the dashboard and the CLI.

Every action that changes something is written to the audit log.
"""

import logging
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from jobqueue import Job, QueueUnavailable
from jobqueue.store import STATES
from rideshare.audit import audit, audit_entries  # noqa: F401 - audit_entries is part of this module's face
from rideshare.jobs import get_job, get_queue

log = logging.getLogger("rideshare.admin")

CLEANABLE_STATES = ("waiting", "delayed", "completed", "failed")


class JobNotFound(LookupError):
    """No job with that id."""


class JobStateConflict(Exception):
    """The job is in a state that does not allow the action."""

    def __init__(self, job_id: str, state: str, action: str) -> None:
        super().__init__(f"job {job_id} is {state}; cannot {action} it")
        self.state = state


def _require(job_id: str) -> Job:
    job = get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def _retry(job: Job, data: Mapping[str, Any] | None) -> Job:
    queue = get_queue(job.queue)
    if job.state != "failed":
        raise JobStateConflict(job.id, job.state, "retry")
    if data is not None:
        queue.validate(data)
    hook = queue.policy.hook("on_manual_retry")
    if hook is not None:
        hook(job, dict(data) if data is not None else job.data)
    try:
        outcome = queue.retry(job.id, data)
    except RedisError as exc:
        raise QueueUnavailable(f"job store unreachable: {exc}") from exc
    if outcome != "waiting":
        raise JobStateConflict(job.id, outcome or "gone", "retry")
    return queue.get_job(job.id) or job


def retry_job(job_id: str, *, actor: str, data: Mapping[str, Any] | None = None) -> Job:
    """Run a failed job again, with new data if given (validated like the original)."""
    job = _retry(_require(job_id), data)
    audit(actor, "job.retry", job_id, queue=job.queue, newData=data is not None)
    return job


def retry_failed(queue_name: str, *, actor: str, limit: int = 10_000) -> int:
    """Retry every failed job of a queue; returns how many were retried."""
    queue = get_queue(queue_name)
    retried = 0
    for job in queue.store.get_many(queue.store.ids_in_state(queue_name, "failed", limit)):  # reads only
        if job is None:
            continue
        try:
            _retry(job, None)
            retried += 1
        except JobStateConflict:
            continue  # it moved on meanwhile
    audit(actor, "queue.retry_failed", queue_name, retried=retried)
    return retried


def delete_job(job_id: str, *, actor: str) -> None:
    """Remove a job that is not running."""
    job = _require(job_id)
    outcome = get_queue(job.queue).delete(job_id)
    if outcome is None:
        raise JobNotFound(job_id)
    if outcome == "active":
        raise JobStateConflict(job_id, "active", "delete")
    audit(actor, "job.delete", job_id, queue=job.queue, state=job.state)


def clean_queue(queue_name: str, *, actor: str, state: str, grace_ms: int, limit: int) -> list[str]:
    """Remove up to limit jobs that have been in state for longer than grace_ms."""
    if state not in CLEANABLE_STATES:
        raise ValueError(f"state must be one of {', '.join(CLEANABLE_STATES)}")
    removed = get_queue(queue_name).clean(state, grace_ms, limit)
    audit(actor, "queue.clean", queue_name, state=state, graceMs=grace_ms, limit=limit, removed=len(removed))
    return removed


def set_paused(queue_name: str, paused: bool, *, actor: str) -> None:
    """Pause (jobs wait, no worker takes them) or resume a queue."""
    queue = get_queue(queue_name)
    queue.pause() if paused else queue.resume()
    audit(actor, "queue.pause" if paused else "queue.resume", queue_name)


def queue_overview(queue_name: str) -> dict[str, Any]:
    """Counts, pause state, workers, recent throughput and processing times of one queue."""
    store = get_queue(queue_name).store
    activity = store.activity(queue_name)
    workers = [
        {"name": name, "pid": info.get("pid"), "concurrency": info.get("concurrency"), "lastSeen": info.get("lastSeen")}
        for name, info in sorted(store.workers().items())
        if queue_name in info.get("queues", [])
    ]
    return {
        "name": queue_name,
        "counts": store.counts(queue_name),
        "paused": store.is_paused(queue_name),
        "workers": workers,
        "completedLastMinute": activity.completed_last_minute,
        "failedLastMinute": activity.failed_last_minute,
        "completedLastHour": activity.completed_last_hour,
        "failedLastHour": activity.failed_last_hour,
        "meanProcessingMs": activity.mean_ms,
        "p95ProcessingMs": activity.p95_ms,
    }


def find_jobs(
    queue_name: str,
    *,
    state: str | None = None,
    offset: int = 0,
    limit: int = 50,
    job_id: str | None = None,
    field: str | None = None,
    value: str | None = None,
) -> tuple[list[Job], int | None]:
    """A page of a queue's jobs, newest first, and the offset of the next page (or None).

    Search by job id, or by a field of the job data (field=value, compared as text).
    """
    store = get_queue(queue_name).store
    if job_id:
        job = store.get(job_id, queue_name)
        match = job is not None and (state is None or job.state == state)
        return ([job] if match else []), None
    states = [state] if state else list(STATES)
    if not field:
        jobs = store.list_jobs(queue_name, states, offset=offset, limit=limit + 1)
        more = len(jobs) > limit
        return jobs[:limit], (offset + limit if more else None)
    # A field search walks the newest jobs in bounded pages.
    found: list[Job] = []
    scanned, page = offset, 500
    while len(found) <= limit and scanned < offset + 20_000:
        batch = store.list_jobs(queue_name, states, offset=scanned, limit=page)
        if not batch:
            break
        for position, job in enumerate(batch):
            if str(job.data.get(field)) == value:
                found.append(job)
                if len(found) > limit:
                    return found[:limit], scanned + position
        scanned += len(batch)
    return found[:limit], None
