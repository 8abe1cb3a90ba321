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
    RateLimited,
    Snooze,
    TransientJobError,
)
from jobqueue.limits import FlowControl, GroupLimits, InvalidLimits, Limits, Rate
from jobqueue.options import Backoff, InvalidJobOptions, JobOptions
from jobqueue.policy import QueuePolicy
from jobqueue.queue import EngineSettings, Job, JobQueue, JobService, PreparedJob
from jobqueue.store import JobRecord, JobStore, Retention, StaleDelivery

__all__ = [
    "Backoff",
    "CancelRefused",
    "EngineSettings",
    "FlowControl",
    "GroupLimits",
    "InvalidJobData",
    "InvalidJobOptions",
    "InvalidLimits",
    "Job",
    "JobCancelled",
    "JobOptions",
    "JobQueue",
    "JobRecord",
    "JobService",
    "JobStore",
    "JobTimeout",
    "Limits",
    "PreparedJob",
    "PermanentJobError",
    "QueuePolicy",
    "QueueUnavailable",
    "Rate",
    "RateLimited",
    "Retention",
    "Snooze",
    "StaleDelivery",
    "TransientJobError",
]
