"""jobqueue: a BullMQ-style job engine on Celery and Redis.

Every job lives in a Redis job store, moved between states by one Lua script per
change (jobqueue/scripts/*.lua), each fenced by its delivery's token. A queue's
whole policy is one QueuePolicy; ``job_task(policy)`` declares the task that runs
it; ``build_service`` binds the queues to a Celery app. The engine knows nothing
of the application that uses it.
"""

from jobqueue.errors import InvalidJobData, JobTimeout, PermanentJobError, QueueUnavailable, TransientJobError
from jobqueue.options import Backoff, InvalidJobOptions, JobOptions
from jobqueue.policy import QueuePolicy
from jobqueue.queue import Job, JobQueue, JobService
from jobqueue.store import JobRecord, JobStore, Retention, StaleDelivery

__all__ = [
    "Backoff",
    "InvalidJobData",
    "InvalidJobOptions",
    "Job",
    "JobOptions",
    "JobQueue",
    "JobRecord",
    "JobService",
    "JobStore",
    "JobTimeout",
    "PermanentJobError",
    "QueuePolicy",
    "QueueUnavailable",
    "Retention",
    "StaleDelivery",
    "TransientJobError",
]
