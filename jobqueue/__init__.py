"""jobqueue: a BullMQ-style job engine on Celery and Redis.

The Redis job store is the only queue. Every job moves between states only by a
row of one transition table (jobqueue.lifecycle), inside the store's Lua scripts
(jobqueue/scripts/*.lua), each fenced by its delivery's token. A queue's whole
policy is one QueuePolicy; ``job_task(policy)`` declares the task that runs it;
``JobService.from_policies`` builds the engine; ``configure_worker`` adds the
consumer bootstep that feeds Celery's pool from the store. The engine knows
nothing of the application that uses it.
"""

from jobqueue.errors import (
    CancelRefused,
    InvalidJobData,
    JobCancelled,
    JobTimeout,
    PermanentJobError,
    QueueUnavailable,
    Snooze,
    TransientJobError,
)
from jobqueue.options import Backoff, InvalidJobOptions, JobOptions
from jobqueue.policy import QueuePolicy
from jobqueue.queue import EngineSettings, Job, JobQueue, JobService, PreparedJob
from jobqueue.store import JobRecord, JobStore, Retention, StaleDelivery

__all__ = [
    "Backoff",
    "CancelRefused",
    "EngineSettings",
    "InvalidJobData",
    "InvalidJobOptions",
    "Job",
    "JobCancelled",
    "JobOptions",
    "JobQueue",
    "JobRecord",
    "JobService",
    "JobStore",
    "JobTimeout",
    "PreparedJob",
    "PermanentJobError",
    "QueuePolicy",
    "QueueUnavailable",
    "Retention",
    "Snooze",
    "StaleDelivery",
    "TransientJobError",
]
