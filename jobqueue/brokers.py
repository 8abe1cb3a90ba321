"""kombu's Redis transport for Celery's own traffic (events, remote control), made to wait out a full Redis.

Jobs never travel through the broker. But a worker still declares its queues and
takes kombu's restore lock as it starts, and on a full noeviction Redis those
writes are refused with OutOfMemoryError, which Celery treats as unrecoverable:
the worker would exit. Here they become connection errors, which Celery logs and
retries with backoff, so the worker starts as soon as Redis has room again.

Only public classes and methods of kombu are subclassed (Transport, Channel, QoS;
queue_declare, queue_bind, restore_visible), and the transport is chosen through
Celery's public ``broker_transport`` setting; the broker URL keeps its redis://
scheme, which Flower reads. ``tests/unit/test_brokers.py`` checks these names
exist in the installed kombu.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu.transport.redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

log = logging.getLogger("jobqueue")

TRANSPORT = "jobqueue.brokers:RedisTransport"

class OutOfMemoryTolerantQoS(kombu_redis.QoS):
    """kombu's Redis QoS, but a full Redis does not stop the worker.

    At connect (and then every so often) kombu hands back messages whose
    consumer died without acking, under a lock taken with SET NX. On a full
    noeviction Redis that SET is refused with OutOfMemoryError, which Celery
    treats as unrecoverable: a fresh worker exits at once. Skipping one
    restore loses nothing: the messages stay in the unacked set for the next
    round, and the job store's lease sweep delivers their jobs again anyway.
    """

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().restore_visible(*args, **kwargs)
        except OutOfMemoryError as exc:
            log.warning("broker.restore_skipped", extra={"reason": "redis out of memory", "error": str(exc)})


FULL_LOG_INTERVAL_S = 10.0
_last_full_log = float("-inf")


@contextmanager
def _full_redis_is_a_connection_error() -> Iterator[None]:
    global _last_full_log
    try:
        yield
    except OutOfMemoryError as exc:
        now = time.monotonic()
        if now - _last_full_log >= FULL_LOG_INTERVAL_S:  # Celery retries about once a second
            _last_full_log = now
            log.error("broker.redis_full", extra={"error": str(exc), "action": "waiting for room in Redis"})
        raise RedisConnectionError(f"Redis is full (maxmemory, noeviction): {exc}") from exc


class FullRedisTolerantChannel:
    """A mixin for kombu's Redis Channel: a worker that meets a full Redis waits instead of exiting.

    Declaring and binding a queue writes (SADD, and LLENs inside MULTI, which a
    full Redis refuses too), and the worker declares its task, reply and
    broadcast queues as it starts. On a full noeviction Redis these raise
    OutOfMemoryError, which Celery treats as unrecoverable. Raised as a
    connection error instead, Celery logs it and reconnects with backoff, and
    the worker starts as soon as Redis has room again.
    """

    QoS = OutOfMemoryTolerantQoS

    def queue_declare(self, *args: Any, **kwargs: Any) -> Any:
        with _full_redis_is_a_connection_error():
            return super().queue_declare(*args, **kwargs)  # type: ignore[misc]

    def queue_bind(self, *args: Any, **kwargs: Any) -> Any:
        with _full_redis_is_a_connection_error():
            return super().queue_bind(*args, **kwargs)  # type: ignore[misc]


class Channel(FullRedisTolerantChannel, kombu_redis.Channel):
    """kombu's Redis channel that waits out a full Redis."""


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with the Channel above (Celery's broker_transport for redis:// brokers)."""

    Channel = Channel
