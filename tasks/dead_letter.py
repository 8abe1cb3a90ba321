"""The dead-letter task: files messages the broker handed over but nobody could read."""

import logging

from celery import Task, shared_task

from jobqueue.transport import DEAD_LETTER_TASK

log = logging.getLogger("jobqueue")
KEEP_DEAD_LETTERS = 1000


@shared_task(bind=True, name=DEAD_LETTER_TASK, ignore_result=True)
def file_dead_letter(self: Task, raw: str, error: str) -> None:
    """Keep an unreadable message for inspection and log it; it is never retried."""
    store = self.app.jobs.store
    key = f"{store.prefix}:deadletter"
    with store.redis.pipeline() as pipe:
        pipe.lpush(key, raw)
        pipe.ltrim(key, 0, KEEP_DEAD_LETTERS - 1)
        pipe.execute()
    log.error("job.dead_letter", extra={"error": error, "excerpt": raw[:200]})
