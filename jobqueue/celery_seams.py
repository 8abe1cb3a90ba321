"""The one module that touches Celery's and kombu's worker internals, behind a version check.

The engine hands a fetched job to Celery as if a broker had delivered it: through the
task's own strategy (``consumer.strategies[name](message, body, ack, reject, callbacks)``),
with a task message built from ``app.amqp.as_task_v2``'s headers. Neither the strategy's
call nor the consumer's attributes read here (``task_consumer``, ``controller.autoscaler``,
``pool.num_processes``, ``hub``) are promised by Celery's documentation, so they live here
only, checked at import for the releases they were written against (celery and kombu 5.7
to 6), and by tests/unit/test_celery_seams.py for the names themselves.
"""

import json
import uuid
from collections.abc import Callable
from typing import Any

import celery
import kombu
from kombu.message import Message


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


SUPPORTED = ((5, 7), (6, 0))  # [from, to)
for _name, _found in (("celery", celery.__version__), ("kombu", kombu.__version__)):
    if not SUPPORTED[0] <= _version(_found) < SUPPORTED[1]:
        raise ImportError(
            f"jobqueue's worker is written against {_name} 5.7 to 6 (its task strategy, consumer and "
            f"Hub.call_soon across threads), not {_found}"
        )


def served_queues(consumer: Any, known: Any) -> list[str]:
    """The queues of known the worker consumes now (-Q, add_consumer, cancel_consumer)."""
    task_consumer = consumer.task_consumer
    if task_consumer is None:
        return []
    return [q.name for q in list(task_consumer.queues) if q.name in known]


def pool_size(consumer: Any) -> int:
    """Jobs the pool runs at once: its processes or threads, or the autoscaler's most."""
    autoscaler = getattr(consumer.controller, "autoscaler", None)
    size = autoscaler.max_concurrency if autoscaler is not None else consumer.pool.num_processes
    return max(int(size or 1), 1)


def call_in_loop(consumer: Any, callback: Callable[..., Any], *args: Any) -> None:
    """Run callback in the worker's event loop (kombu's Hub wakes it from another thread),
    or at once where the worker has no loop (gevent, eventlet)."""
    if consumer.hub is not None:
        consumer.hub.call_soon(callback, *args)
    else:
        callback(*args)


class TaskMessages:
    """Celery task messages for fetched jobs, on the headers Celery itself builds (once per task)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._templates: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}

    def _template(self, task: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if task not in self._templates:
            headers, properties, body, _ = self.app.amqp.as_task_v2(
                "-", task, args=[], ignore_result=True, kwargsrepr="{}"
            )
            self._templates[task] = (headers, properties, body[2])
        return self._templates[task]

    def build(
        self, task: str, queue: str, task_id: str, arg: Any, *, time_limit: float, retries: int, priority: int
    ) -> Message:
        """One message: task_id is the job id, its one argument the job's stored fields."""
        template, properties, embed = self._template(task)
        headers = {
            **template,
            "id": task_id,
            "root_id": task_id,
            "timelimit": [time_limit, None],
            "argsrepr": repr((task_id,)),
            "retries": retries,
        }
        body = json.dumps([[arg], {}, embed], separators=(",", ":"))
        return Message(
            body=body.encode(),
            delivery_tag=uuid.uuid4().hex,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            properties={**properties, "correlation_id": task_id, "priority": priority},
            delivery_info={"exchange": "", "routing_key": queue, "redelivered": retries > 0},
        )


def hand_to_pool(
    consumer: Any, task: str, message: Message, ack: Callable[..., Any], reject: Callable[..., Any]
) -> None:
    """Give a message to the task's strategy, as the consumer does for a broker message: a
    Celery request (task-received, reserved, then the pool); ack or reject is called once."""
    consumer.strategies[task](message, None, ack, reject, None)


def running_requests() -> list[Any]:
    """The requests this worker process has handed to its pool and not yet ended
    (``celery.worker.state.active_requests``, what ``inspect active`` reads)."""
    from celery.worker import state

    return list(state.active_requests)


def terminate(consumer: Any, request: Any, signal: str = "SIGTERM") -> bool:
    """Stop a running request as ``revoke(terminate=True)`` does (its pool process is
    signalled; the pool replaces it). False for pools that cannot (threads, solo)."""
    try:
        request.terminate(consumer.pool, signal=signal)
    except NotImplementedError:
        return False
    return True
