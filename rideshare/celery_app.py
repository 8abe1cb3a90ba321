"""The Celery app, bound to the Flask app in one place."""

import importlib
from typing import Any

from celery import Celery, signals
from flask import Flask

import celeryconfig
from rideshare.jobs import transport
from rideshare.jobs.queue import JobQueue, JobService
from rideshare.jobs.sealing import Sealer
from rideshare.jobs.store import JobStore, Retention
from rideshare.jobs.task import JobTask
from rideshare.jobs.worker import QueueControl


def celery_init_app(app: Flask) -> Celery:
    """Build the Celery app from celeryconfig, register the tasks, and bind the job queues."""
    # redis:// brokers get kombu's transport with two fixes: a worker survives the
    # broker restarting, and an unreadable message becomes a dead letter.
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
    if not celery.conf.broker_url.startswith("redis"):
        celery.conf.broker_transport_options = {}  # the Redis transport's options mean nothing elsewhere
    celery.flask_app = app  # JobTask enters this app's context around every job
    celery.set_default()
    celery.steps["consumer"].add(QueueControl)
    signals.celeryd_init.connect(_size_pools_for_worker(app, celery), weak=False)
    for module in celery.conf.imports:
        importlib.import_module(module)

    store = JobStore.from_url(
        app.config["REDIS_URL"], prefix=app.config["JOB_KEY_PREFIX"], sealer=Sealer.from_config(app.config)
    )
    retention = (
        Retention(count=app.config["JOB_KEEP_COMPLETED"]),
        Retention(count=app.config["JOB_KEEP_FAILED"]),
    )
    queues = {
        task.queue: JobQueue(task.queue, task.name, celery, store, task.default_options(app.config), retention)
        for task in celery.tasks.values()
        if isinstance(task, JobTask) and getattr(task, "queue", None)
    }
    app.extensions["celery"] = celery
    app.extensions["jobs"] = JobService(store, queues)
    return celery


THREADED_POOLS = ("thread", "threads", "gevent", "eventlet")


def worker_parallelism(options: dict[str, Any], conf: Any) -> tuple[str, int]:
    """The pool name and the most jobs a worker may run at once, from its options and settings."""
    pool = options.get("pool") or options.get("pool_cls") or conf.worker_pool
    name = pool.__module__.rsplit(".", 1)[-1] if isinstance(pool, type) else str(pool).rsplit(":", 1)[-1]
    most = int(options.get("concurrency") or conf.worker_concurrency or 0)
    autoscale = options.get("autoscale")  # (max, min) from --autoscale
    if autoscale:
        bounds = autoscale if isinstance(autoscale, list | tuple) else str(autoscale).split(",")
        most = max(most, *(int(b) for b in bounds))
    return name.lower(), most


def _size_pools_for_worker(app: Flask, celery: Celery) -> Any:
    """On a threads/gevent pool every job runs in this process: one SQL connection per job."""

    def on_worker_init(sender: Any = None, instance: Any = None, options: Any = None, **_: Any) -> None:
        if instance is None or instance.app is not celery:
            return
        pool, most = worker_parallelism(options or {}, celery.conf)
        if pool in THREADED_POOLS and most:
            app.extensions["db"].grow_pool(most)

    return on_worker_init
