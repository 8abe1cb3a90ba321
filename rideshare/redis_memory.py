"""The job store's Redis memory, as the app uses it: the eviction check at start-up and on /readyz,
and the API's headroom guard on new jobs (the rules themselves are in jobqueue.memory)."""

from flask import Flask, has_request_context

from jobqueue.memory import MemoryGuard, check_eviction_policy, eviction_risk, read_memory

# What a delayed job still costs Redis once it is due: its broker message (about 1.2 KiB for
# our tasks) and list entry, kombu's unacked copy while a worker holds it, and the attempt's
# record; rounded up. (A worker's connections take their own few hundred KB, which the rest
# of the headroom covers: tests/integration/test_redis_memory.py prints the peak.)
DELAYED_MESSAGE_BYTES = 3 * 1024


def init_app(app: Flask) -> None:
    """Check maxmemory-policy once (an ERROR log line naming the risk), and refuse new jobs from
    HTTP requests (503) once Redis is past JOB_STORE_MAX_MEMORY_SHARE of maxmemory.

    Only requests are refused: a worker's follow-up jobs (a receipt email after a charge) finish
    work that was accepted, which is what the headroom is kept for.
    """
    jobs = app.extensions["jobs"]
    check_eviction_policy(jobs.store.redis, allow=app.config["REDIS_ALLOW_EVICTION"], who=app.import_name)

    def reserve() -> int:
        # A delayed job (a welcome email, a retry's backoff) gets its broker message only
        # when due, and draining needs room for it then: count it as written already.
        delayed = sum(jobs.store.counts(name)["delayed"] for name in jobs.queues)
        return delayed * DELAYED_MESSAGE_BYTES

    guard = MemoryGuard(jobs.store.redis, app.config["JOB_STORE_MAX_MEMORY_SHARE"], reserve=reserve)

    def admit_requests() -> None:
        if has_request_context():
            guard()

    for queue in jobs.queues.values():
        queue.admission = admit_requests


def readiness(app: Flask) -> str | None:
    """Why Redis is not fit to keep jobs (an evicting policy), or None; raises RedisError if unreachable."""
    if app.config["REDIS_ALLOW_EVICTION"]:
        return None
    return eviction_risk(read_memory(app.extensions["jobs"].store.redis).policy)
