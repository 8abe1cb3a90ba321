"""The job store's Redis memory, as the app uses it: the eviction check at start-up and on /readyz,
and the API's headroom guard on new jobs (the rules themselves are in jobqueue.memory)."""

from collections.abc import Callable

from flask import Flask, has_request_context

from jobqueue import JobStore
from jobqueue.memory import MemoryGuard, check_eviction_policy, eviction_risk, read_memory

# What a delayed job still costs Redis once it runs: its lease, its attempt record and its
# result; rounded up. (A worker's connections take their own few hundred KB, which the rest
# of the headroom covers: tests/integration/test_redis_memory.py prints the peak.)
DELAYED_JOB_BYTES = 1024


def admission(app: Flask, store: JobStore, queues: list[str]) -> Callable[[], None]:
    """The engine's admission check for new jobs, on every path (add, add_bulk, the outbox relay).

    An evicting maxmemory-policy refuses every new job (QueueUnavailable, a 503 at the API)
    unless REDIS_ALLOW_EVICTION=true. Past JOB_STORE_MAX_MEMORY_SHARE of maxmemory, only
    requests are refused: a worker's follow-up jobs (a receipt email after a charge) finish
    work that was accepted, which is what the headroom is kept for.
    """
    guard = MemoryGuard(
        store.redis,
        app.config["JOB_STORE_MAX_MEMORY_SHARE"],
        reserve=lambda: sum(store.counts(name)["delayed"] for name in queues) * DELAYED_JOB_BYTES,
        allow_eviction=app.config["REDIS_ALLOW_EVICTION"],
    )
    return lambda: guard(headroom=has_request_context())


def init_app(app: Flask) -> None:
    """Check maxmemory-policy once at start-up: an ERROR log line naming the risk."""
    redis = app.extensions["jobs"].store.redis
    check_eviction_policy(redis, allow=app.config["REDIS_ALLOW_EVICTION"], who=app.import_name)


def readiness(app: Flask) -> str | None:
    """Why Redis is not fit to keep jobs (an evicting policy), or None; raises RedisError if unreachable."""
    if app.config["REDIS_ALLOW_EVICTION"]:
        return None
    return eviction_risk(read_memory(app.extensions["jobs"].store.redis).policy)
