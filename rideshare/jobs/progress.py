"""What a running job tells the people following it: its step, a log line, and whether to stop.

The domain's workers (payments, mail) call these with the job they were handed, or with
None when a domain function runs outside a job (a test, a script). Reporting is best
effort: a job store that is away, or a delivery that no longer holds its job, never
fails the work itself; the rows' own fencing decides what a stale delivery may write.
Never report card data, message bodies or secrets: support staff and the job's owner
read these lines.
"""

import logging
from typing import Any

from redis.exceptions import RedisError

from jobqueue import Job, JobCancelled, StaleDelivery

log = logging.getLogger("rideshare.jobs")


def _bound(job: Job | None) -> bool:
    return job is not None and getattr(job, "store", None) is not None


def report_step(job: Job | None, step: str, **fields: Any) -> None:
    """Set the job's progress to {"step": step, **fields} (GET /jobs/<id>, the dashboard, the events)."""
    if not _bound(job):
        return
    try:
        job.update_progress({"step": step, **fields})
    except (RedisError, StaleDelivery) as exc:
        log.debug("job.progress_not_kept", extra={"job_id": job.id, "queue": job.queue, "error": str(exc)})


def log_line(job: Job | None, line: str) -> None:
    """Add a line to this attempt's log."""
    if not _bound(job):
        return
    try:
        job.log(line)
    except (RedisError, StaleDelivery) as exc:
        log.debug("job.log_not_kept", extra={"job_id": job.id, "queue": job.queue, "error": str(exc)})


def stop_if_cancelled(job: Job | None) -> None:
    """A check point: raise JobCancelled if the job was cancelled (it then ends cancelled, never retried).

    A store that does not answer reads as not cancelled: what a cancel must prevent (a
    charge) is also refused by the domain's rows, and the next check point asks again.
    """
    if not _bound(job):
        return
    try:
        cancelled = job.is_cancelled()
    except RedisError as exc:
        log.warning("job.cancel_check_failed", extra={"job_id": job.id, "queue": job.queue, "error": str(exc)})
        return
    if cancelled:
        raise JobCancelled(job.cancel_requested or "cancelled")
