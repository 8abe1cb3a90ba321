"""Celery settings, read from the environment.

Plain data: this module imports nothing from the application, so a worker,
Flower and the API all read the same broker, queues and routes.
"""

import os
from urllib.parse import quote

from dotenv import load_dotenv
from kombu import Exchange, Queue

# The same .env the app reads, loaded before any setting below is computed.
load_dotenv(override=False)


def redis_url_from_env(environ: os._Environ | dict = os.environ) -> str:
    """The Redis URL: REDIS_URL if set, else built from REDIS_HOST/PORT/PASSWORD/DB."""
    if environ.get("REDIS_URL"):
        return environ["REDIS_URL"]
    host = environ.get("REDIS_HOST", "127.0.0.1")
    port = environ.get("REDIS_PORT", "6379")
    db = environ.get("REDIS_DB", "0")
    password = environ.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


broker_url = os.environ.get("BROKER_URL") or redis_url_from_env()
broker_connection_retry_on_startup = True


def task_queues_for(url: str, names: tuple[str, ...]) -> tuple[Queue, ...]:
    """Celery's queues of these names (the app derives them from its queue policies).

    Jobs never travel through the broker: a worker's -Q names the job queues it takes
    from the job store, and Celery checks those names against this list. On RabbitMQ
    the queues are declared as quorum queues, should anything else be routed there.
    """
    rabbit = url.startswith(("amqp", "pyamqp"))
    arguments = {"x-queue-type": "quorum"} if rabbit else None
    return tuple(Queue(name, Exchange(name), routing_key=name, queue_arguments=arguments) for name in names)


# Every queue is declared; a typo in a route must fail, not create a queue nobody consumes.
task_create_missing_queues = False

# JSON only: pickle is never accepted, from the broker or anywhere else.
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"
result_accept_content = ["json"]

# Job state and results live in our job store (jobqueue.store), not in a
# Celery result backend: storing results there would slow every publish.
task_ignore_result = True
result_backend = None

# Task events feed Flower (received, started, succeeded, failed, retried, with the job id
# as the task id). Workers send them from the start (CELERY_TASK_EVENTS=false turns them
# off): a job that runs while no Flower watches is still in Flower's view once it starts,
# as long as Flower was running to hear it. Flower started later knows only what happens
# after it starts; the job store (API, dashboard) always knows every job.
worker_send_task_events = os.environ.get("CELERY_TASK_EVENTS", "true").lower() in ("1", "true", "yes")
task_send_sent_event = False

# Plain Celery tasks, if any: ack after the work is done. (Jobs are leased from the job
# store instead; a worker fetches only as many as it has free slots.)
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = int(os.environ.get("CELERY_PREFETCH_MULTIPLIER", "1"))
worker_hijack_root_logger = False

# Recycle pool processes now and then, so a slow leak in a library cannot grow for ever.
worker_max_tasks_per_child = int(os.environ.get("CELERY_MAX_TASKS_PER_CHILD", "1000"))
worker_max_memory_per_child = int(os.environ.get("CELERY_MAX_MEMORY_PER_CHILD_KB", "262144"))
imports = ("tasks.email", "tasks.analytics", "tasks.payment")
