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


QUEUES = ("email", "analytics", "payment")

broker_url = os.environ.get("BROKER_URL") or redis_url_from_env()
broker_connection_retry_on_startup = True


def task_queues_for(url: str) -> tuple[Queue, ...]:
    """The three queues; on RabbitMQ the payment queue is a quorum queue (replicated, durable)."""
    rabbit = url.startswith(("amqp", "pyamqp"))

    def arguments(name: str) -> dict[str, str] | None:
        return {"x-queue-type": "quorum"} if rabbit and name == "payment" else None

    return tuple(Queue(name, Exchange(name), routing_key=name, queue_arguments=arguments(name)) for name in QUEUES)


# Every queue is declared; a typo in a route must fail, not create a queue nobody consumes.
task_queues = task_queues_for(broker_url)
task_create_missing_queues = False
task_default_queue = "analytics"
task_routes = {f"{name}.*": {"queue": name, "routing_key": name} for name in QUEUES}

# JSON only: pickle is never accepted, from the broker or anywhere else.
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"
result_accept_content = ["json"]

# Job state and results live in our job store (jobqueue.store), not in a
# Celery result backend: storing results there would slow every publish.
task_ignore_result = True
result_backend = None

# Task events feed Flower. Workers send them only once someone watches: Flower turns
# them on in every worker when it starts and every 5 s after (its --enable_events),
# since sending three events per job costs a quarter of a worker's throughput
# (docs/benchmarks.md). CELERY_TASK_EVENTS=true sends them from the start.
worker_send_task_events = os.environ.get("CELERY_TASK_EVENTS", "false").lower() in ("1", "true", "yes")
# The publisher's "task-sent" event (Flower lists jobs still waiting in the broker): off
# unless asked for, as it costs a publish per job. On a Redis broker the job store's
# add script writes the message itself and sends no event either way; Flower still
# sees every job once a worker receives it.
task_send_sent_event = os.environ.get("CELERY_SENT_EVENTS", "false").lower() in ("1", "true", "yes")

# Ack after the work is done, and hand a job back if its worker dies.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = int(os.environ.get("CELERY_PREFETCH_MULTIPLIER", "1"))
worker_hijack_root_logger = False

broker_transport_options = {
    # No kombu unacked record nor ack per message: a message is simply popped. Recovery
    # rests on one mechanism, the job store's: a started job holds a lease, and a job
    # whose message was taken by a worker that died before starting it is published
    # again (JOB_STALE_WAITING_MS). kombu's bookkeeping would pay for the same twice.
    "ack_emulation": False,
    # Lower number = served first, as in BullMQ; 0..9. A queue waits only on the lists
    # of the priority levels its policy offers (QueuePolicy.priorities).
    "queue_order_strategy": "priority",
    "priority_steps": list(range(10)),
    "sep": ":",
}

# Recycle pool processes now and then, so a slow leak in a library cannot grow for ever.
worker_max_tasks_per_child = int(os.environ.get("CELERY_MAX_TASKS_PER_CHILD", "1000"))
worker_max_memory_per_child = int(os.environ.get("CELERY_MAX_MEMORY_PER_CHILD_KB", "262144"))
imports = ("tasks.email", "tasks.analytics", "tasks.payment", "tasks.dead_letter")
