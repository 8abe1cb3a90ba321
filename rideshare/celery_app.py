"""The Celery app and the job engine, bound to the Flask app in one place."""

import os
import weakref
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from celery import Celery
from flask import Flask, has_app_context

import celeryconfig
from jobqueue import JobQueue, JobService, JobStore, QueuePolicy, Retention, transport
from jobqueue.outbox import Outbox
from jobqueue.sealing import Sealer
from jobqueue.worker import THREADED_POOLS, configure_worker
from rideshare.analytics.queue import ANALYTICS_QUEUE
from rideshare.jobs.outbox import JOB_OUTBOX
from rideshare.mail.queue import EMAIL_QUEUE
from rideshare.payments.queue import PAYMENT_QUEUE

# Every queue's policy, each declared beside its domain. The API reads them to
# queue jobs; it never imports the tasks that run them.
POLICIES: tuple[QueuePolicy, ...] = (EMAIL_QUEUE, ANALYTICS_QUEUE, PAYMENT_QUEUE)


def celery_init_app(app: Flask) -> Celery:
    """Build the Celery app from celeryconfig and bind the job queues to it."""
    # redis:// brokers get kombu's transport with fixes: a worker survives the broker
    # restarting, an unreadable message becomes a dead letter, and each queue waits
    # only on the priority lists it has.
    transport.install()
    celery = Celery(app.name)
    celery.config_from_object("celeryconfig")
    # The broker follows the app's settings (defaults, env, .env, test config): by
    # default the Redis whose job store records the jobs; BROKER_URL may name another
    # broker (RabbitMQ), the job store staying in Redis.
    celery.conf.broker_url = app.config["BROKER_URL"] or app.config["REDIS_URL"]
    celery.conf.update(app.config.get("CELERY", {}))
    # Queues as this broker wants them (a quorum queue for payments on RabbitMQ).
    celery.conf.task_queues = celeryconfig.task_queues_for(celery.conf.broker_url)
    if celery.conf.broker_url.startswith("redis"):
        celery.conf.broker_transport_options = {
            **celery.conf.broker_transport_options,
            "queue_priorities": {policy.name: policy.priorities for policy in POLICIES},
        }
    else:
        celery.conf.broker_transport_options = {}  # the Redis transport's options mean nothing elsewhere
    celery.set_default()

    def size_sql_pool(pool: str, most: int) -> None:
        # On a threads/gevent pool every job runs in this process: one SQL connection per job.
        if pool in THREADED_POOLS and most:
            app.extensions["db"].grow_pool(most)

    configure_worker(celery, on_init=size_sql_pool)

    store = JobStore.from_url(
        app.config["REDIS_URL"],
        prefix=app.config["JOB_KEY_PREFIX"],
        sealer=Sealer.from_keys(
            app.config["JOB_DATA_KEYS"], secret=app.config["SECRET_KEY"], salt=b"rideshare-job-data:"
        ),
    )
    retention = (Retention(count=app.config["JOB_KEEP_COMPLETED"]), Retention(count=app.config["JOB_KEEP_FAILED"]))
    # Messages go in the job store's own scripts when the broker is that same Redis.
    direct = celery.conf.broker_url == app.config["REDIS_URL"]
    defaults = (app.config["JOB_RETRY_ATTEMPTS"], app.config["JOB_RETRY_DELAY"], app.config["JOB_TIMEOUT"])
    queues = {
        policy.name: JobQueue(policy, celery, store, policy.defaults(*defaults), retention, direct=direct)
        for policy in POLICIES
    }

    def app_context() -> AbstractContextManager[Any]:
        # Entered only when none is active: a job run from inside a request or another
        # job must reuse that context, or it would get a separate DB session.
        return nullcontext() if has_app_context() else app.app_context()

    celery.jobs = JobService(
        store,
        queues,
        context=app_context,
        max_stalls=app.config["JOB_MAX_STALLS"],
        lost_after_ms=app.config["JOB_STALE_WAITING_MS"],
    )
    app.extensions["celery"] = celery
    app.extensions["jobs"] = celery.jobs

    # The transactional outbox: a job that belongs to a SQL row is staged in that row's
    # transaction and published after the commit; every worker's scheduler tick relays
    # what a request that died after its commit left behind.
    outbox = Outbox(
        JOB_OUTBOX, lambda: app.extensions["db"].engine, queues, settle_ms=app.config["JOB_OUTBOX_SETTLE_MS"]
    )
    celery.jobs.relays.append(outbox.relay)
    app.extensions["outbox"] = outbox
    # The relay runs in a prefork worker's main process, which forks pool processes
    # later too (autoscale, replacing a dead one): a child must not share the
    # parent's pooled SQL connections, so it starts with an empty pool.
    db = weakref.ref(app.extensions["db"])
    os.register_at_fork(after_in_child=lambda: _forget_sql_connections(db))
    return celery


def _forget_sql_connections(ref: "weakref.ReferenceType[Any]") -> None:
    database = ref()
    if database is not None and database.engine is not None:
        database.engine.dispose(close=False)  # the parent still owns and closes them
