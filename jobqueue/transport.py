"""The Redis transport, hardened: poison messages and broker restarts no longer stop a worker.

Poison messages: an unreadable message becomes a dead letter, not a crash.

kombu's Redis channel decodes each message with a bare ``json.loads``; one
payload that is not a kombu envelope (a stray LPUSH, a truncated write)
raises inside the worker's event loop and stops the worker. Here such a
payload is turned into a message for the ``jobqueue.dead_letter`` task,
which files it under ``<prefix>:deadletter`` and logs it, so every other
job keeps flowing.
"""

import base64
import bisect
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu.transport.redis as kombu_redis
from kombu.transport import TRANSPORT_ALIASES
from redis import exceptions as redis_exceptions

from jobqueue.memory import FullRedisTolerantChannel

DEAD_LETTER_TASK = "jobqueue.dead_letter"
EXCERPT_BYTES = 2000
_original_loads = kombu_redis.loads


def _dead_letter_envelope(raw: str, error: str) -> dict[str, Any]:
    task_id = uuid.uuid4().hex
    body = json.dumps([[raw[:EXCERPT_BYTES], error], {}, {"callbacks": None, "errbacks": None, "chain": None}])
    return {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": DEAD_LETTER_TASK,
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "timelimit": [None, None],
            "argsrepr": "(<undecodable message>)",
            "kwargsrepr": "{}",
            "ignore_result": True,
        },
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": ""},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def tolerant_loads(text: str, *args: Any, **kwargs: Any) -> Any:
    """kombu's loads, but a payload that is not a message envelope becomes a dead letter."""
    try:
        value = _original_loads(text, *args, **kwargs)
    except (ValueError, TypeError) as exc:
        return _dead_letter_envelope(str(text), f"not JSON: {exc}")
    if isinstance(value, list):
        return value  # the unacked-restore records are [message, exchange, routing_key]
    if not isinstance(value, dict) or "properties" not in value or "body" not in value:
        return _dead_letter_envelope(str(text), "not a message envelope")
    return value


def install() -> None:
    """Use the hardened transport for redis:// brokers (idempotent).

    By alias rather than by broker_transport, so broker URLs keep their
    redis:// scheme, which Flower and other tools read.
    """
    kombu_redis.loads = tolerant_loads
    TRANSPORT_ALIASES["redis"] = "jobqueue.transport:Transport"


class Channel(FullRedisTolerantChannel, kombu_redis.Channel):
    """Survives the broker going away and coming back, and a full Redis (FullRedisTolerantChannel).

    When Redis dies, the worker drops its channel and reconnects with a new
    one. kombu 5.7 then still uses the old channel twice: closing it tries
    to hand unacked messages back, and a job that finishes afterwards acks
    through it. Both build a Redis client from a connection that is gone and
    raise AttributeError, which Celery treats as unrecoverable: the worker
    exits. Here both raise a connection error instead, which kombu and
    Celery log and survive. The messages concerned stay in Redis's unacked
    set and come back by the visibility timeout as stale copies; the jobs
    they carry are delivered again by the job store's lease sweep.
    """

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise redis_exceptions.ConnectionError("channel belongs to a closed broker connection")
        return super()._connparams(asynchronous=asynchronous)

    _sync_client: Any = None
    # Priority levels per queue name (QueuePolicy.priorities); a queue not named has them all.
    queue_priorities: dict[str, int] = {}
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "queue_priorities")

    def _brpop_start(self, timeout: float | None = None) -> None:
        """kombu's BRPOP over the consumed queues, but only over the priority lists each queue has."""
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        levels = self.queue_priorities
        keys = [
            self._q_for_pri(queue, pri)
            for index, pri in enumerate(self.priority_steps)
            for queue in queues
            if index < levels.get(queue, len(self.priority_steps))
        ]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        command_args = ["BRPOP", *keys, timeout or 0]
        if self.global_keyprefix:
            command_args = self.client._prefix_args(command_args)
        self.client.connection.send_command(*command_args)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """One redis-py client per channel for acks and unacked bookkeeping.

        kombu builds a new client for each (two per message), and redis-py copies
        its ~170 response callbacks into every new client: 9% of a worker's time on
        light jobs (bench/profile.py). The client holds no state of its own; it
        follows the channel's pool, so a pool rebuilt after a reconnect gets a new
        client, and a closed connection still raises as above.
        """
        if client:
            yield client
            return
        pool = self.pool
        if self._sync_client is None or self._sync_client.connection_pool is not pool:
            self._sync_client = self._create_client()
        yield self._sync_client

    def close(self) -> None:
        try:
            super().close()
        except redis_exceptions.ConnectionError as exc:
            logging.getLogger("jobqueue").warning("broker.close_without_restore", extra={"error": str(exc)})


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the Channel above (installed for redis:// by install())."""

    Channel = Channel


PUBLISHED_AT = "x-published-at"


class RedisMessages:
    """Builds the broker message kombu's Redis channel would write for a task call.

    The job store's add script pushes it onto the queue's list in the same step
    that stores the job, so enqueueing is one round trip and has no gap between
    the job and its message. Celery reads it as any message it published itself.
    """

    def __init__(self, celery: Any) -> None:
        self.celery = celery
        options = celery.conf.broker_transport_options or {}
        self.sep = options.get("sep", kombu_redis.Channel.sep)
        self.steps = list(options.get("priority_steps", kombu_redis.Channel.priority_steps))
        self.prefix = options.get("global_keyprefix", "")
        self._templates: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}

    def key(self, queue: str, priority: int | None) -> str:
        """The list a message of this priority goes to, as kombu's _q_for_pri names it."""
        level = self.steps[bisect.bisect(self.steps, priority or 0) - 1] if self.steps else 0
        return f"{self.prefix}{queue}{self.sep}{level}" if level else f"{self.prefix}{queue}"

    def _template(self, task: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Celery's own headers, properties and embed for a task call, made once per task.

        Only the id, root id, time limit and args repr differ from one call to the next
        (message() sets them), so Celery builds the rest once rather than per job.
        """
        if task not in self._templates:
            headers, properties, body, _ = self.celery.amqp.as_task_v2(
                "-", task, args=[], ignore_result=True, kwargsrepr="{}"
            )
            self._templates[task] = (headers, properties, body[2])
        return self._templates[task]

    def message(
        self, task: str, task_id: str, args: list[Any], queue: str, *, priority: int | None, time_limit: float
    ) -> str:
        """The JSON envelope of one task message."""
        template, properties, embed = self._template(task)
        headers = {
            **template,
            "id": task_id,
            "root_id": task_id,
            "timelimit": [time_limit, None],
            "argsrepr": repr(args),
            # When it entered the broker: the lost-message sweep reads it off the oldest message.
            PUBLISHED_AT: int(time.time() * 1000),
        }
        properties = {**properties, "correlation_id": task_id}
        payload = json.dumps([args, {}, embed], separators=(",", ":")).encode()
        return json.dumps(
            {
                "body": base64.b64encode(payload).decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": headers,
                "properties": {
                    **properties,
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": queue, "routing_key": queue},
                    "priority": priority or 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                },
            },
            separators=(",", ":"),
        )

    @staticmethod
    def published_at(raw: str) -> int | None:
        """When a message built here entered the broker (ms), or None for any other message."""
        try:
            value = json.loads(raw)["headers"].get(PUBLISHED_AT)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return int(value) if isinstance(value, int | float) else None

    @staticmethod
    def job_ids(raw: str) -> list[str]:
        """The job ids a message carries (one, or a batch's), for the lost-message sweep."""
        try:
            envelope = json.loads(raw)
            body = json.loads(base64.b64decode(envelope["body"]))
            first = body[0][0]
        except (ValueError, TypeError, KeyError, IndexError):
            return []
        if isinstance(first, list):
            return [str(item[0]) for item in first if item]
        return [str(first)]
