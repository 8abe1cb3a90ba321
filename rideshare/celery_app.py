"""The Celery app and the job engine, bound to the Flask app in one place (Flask's Celery pattern)."""

import logging
import os
import weakref
from contextlib import nullcontext
from typing import Any

from celery import Celery
from flask import Flask, has_app_context
from redis.exceptions import RedisError

from jobqueue import EngineSettings, JobService, JobStore, QueuePolicy
from jobqueue.limits import SET_BY_ADMIN, Limits
from jobqueue.outbox import Outbox
from jobqueue.scripts import Features
from jobqueue.sealing import Sealer
from jobqueue.worker import THREADED_POOLS, configure_worker
from rideshare import redis_memory
from rideshare.config import SettingsError, flow_limits
from rideshare.jobs.outbox import JOB_OUTBOX
from rideshare.jobs.shipped import ShippedSchedule, seed_shipped_schedules, shipped_schedules
from rideshare.queues import POLICIES

log = logging.getLogger(__name__)


def celery_init_app(app: Flask) -> Celery:
    """Build the Celery app from celeryconfig and the job engine from the policies."""
    config = app.config
    limits = flow_limits(config, [policy.name for policy in POLICIES])  # a bad value stops the start here
    celery = Celery(app.name, config_source="celeryconfig")
    celery.set_default()
    # The broker carries Celery's own traffic (events, remote control): by default the
    # Redis that holds the job store; BROKER_URL may name another (RabbitMQ). Jobs never
    # travel through it.
    celery.conf.broker_url = config["BROKER_URL"] or config["REDIS_URL"]
    celery.conf.update(config.get("CELERY", {}))
    celery.conf.update(task_queues_and_routes(POLICIES, celery.conf.broker_url))
    store = JobStore.from_url(
        config["REDIS_URL"],
        prefix=config["JOB_KEY_PREFIX"],
        sealer=Sealer.from_keys(config["JOB_DATA_KEYS"], secret=config["SECRET_KEY"], salt=b"rideshare-job-data:"),
        features=Features(
            events=max(0, config["JOB_EVENTS_MAXLEN"]),
            buckets=config["JOB_METRIC_BUCKETS"],
            indexes=config["JOB_SEARCH_INDEX"],
        ),
    )
    celery.jobs = JobService.from_policies(
        POLICIES,
        store,
        EngineSettings(
            attempts=config["JOB_RETRY_ATTEMPTS"],
            delay=config["JOB_RETRY_DELAY"],
            timeout=config["JOB_TIMEOUT"],
            keep_completed=config["JOB_KEEP_COMPLETED"],
            keep_failed=config["JOB_KEEP_FAILED"],
            max_stalls=config["JOB_MAX_STALLS"],
        ),
        admission=redis_memory.admission(app, store, [policy.name for policy in POLICIES]),
        # A job run from inside a request or another job reuses that app context.
        context=lambda: nullcontext() if has_app_context() else app.app_context(),
    )
    seed_flow_limits(celery.jobs, limits)
    scheduler = config.get("JOB_SCHEDULER", "worker")
    if scheduler not in ("worker", "off"):
        raise SettingsError({"JOB_SCHEDULER": f"must be worker or off (got {scheduler!r})"})
    celery.jobs.run_scheduler = scheduler == "worker"
    # A bad cron or time zone of a shipped schedule stops the start here, as a bad limit does.
    shipped = shipped_schedules(config) if config.get("SHIPPED_SCHEDULES") else []
    configure_worker(celery, on_init=lambda pool, most: _on_worker_init(app, celery.jobs, shipped, pool, most))
    # The transactional outbox: a job written in a SQL row's transaction, added after the commit;
    # every worker's housekeeping relays what a request that died after its commit left behind.
    outbox = Outbox(
        JOB_OUTBOX, lambda: app.extensions["db"].engine, celery.jobs.queues, settle_ms=config["JOB_OUTBOX_SETTLE_MS"]
    )
    celery.jobs.relays.append(outbox.relay)
    app.extensions.update(celery=celery, jobs=celery.jobs, outbox=outbox)
    _fork_safe_sql(app)
    return celery


def seed_flow_limits(jobs: JobService, limits: dict[str, Limits]) -> None:
    """Write the environment's limits into the job store, but not over an operator's (admin API, CLI,
    dashboard): those stay until an operator changes them again."""
    for name, queue_limits in limits.items():
        flow = jobs.queues[name].flow
        try:
            if flow.seed(queue_limits):
                log.info("flow.seeded", extra={"queue": name, "limits": queue_limits.to_dict()})
            elif flow.set_by() == SET_BY_ADMIN:
                log.info("flow.kept", extra={"queue": name, "limits": flow.get().to_dict(), "setBy": SET_BY_ADMIN})
        except RedisError as exc:
            # As the eviction check: an unreachable Redis is found out on first use, and what the
            # store holds from before still applies; the next start seeds again.
            log.warning("flow.not_seeded", extra={"queue": name, "error": str(exc)})


def task_queues_and_routes(policies: tuple[QueuePolicy, ...], broker_url: str) -> dict[str, Any]:
    """Celery's queue list and routes, derived from the policies (a queue's name is written once).

    A worker's -Q names the job queues it serves; Celery validates them against this list.
    """
    from celeryconfig import task_queues_for

    names = tuple(policy.name for policy in policies)
    return {
        "task_queues": task_queues_for(broker_url, names),
        "task_routes": {policy.task: {"queue": policy.name, "routing_key": policy.name} for policy in policies},
        "task_default_queue": names[0],
    }


def _on_worker_init(app: Flask, jobs: JobService, shipped: list[ShippedSchedule], pool: str, most: int) -> None:
    _size_sql_pool(app, pool, most)
    if jobs.run_scheduler and shipped:
        # Where the schedules fire: a worker running a scheduler makes the shipped ones it lacks.
        seed_shipped_schedules(jobs, shipped)


def _size_sql_pool(app: Flask, pool: str, most: int) -> None:
    # On a threads/gevent pool every job runs in this process: one SQL connection per job.
    if pool in THREADED_POOLS and most:
        app.extensions["db"].grow_pool(most)


def _fork_safe_sql(app: Flask) -> None:
    # A prefork worker's main process runs the outbox relay and forks pool processes later
    # too (autoscale, replacing a dead one): a child must not share the parent's pooled SQL
    # connections, so it starts with an empty pool.
    db = weakref.ref(app.extensions["db"])
    os.register_at_fork(after_in_child=lambda: _forget_sql_connections(db))


def _forget_sql_connections(ref: "weakref.ReferenceType[Any]") -> None:
    database = ref()
    if database is not None and database.engine is not None:
        database.engine.dispose(close=False)  # the parent still owns and closes them
