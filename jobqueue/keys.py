"""The Redis keys of the job store, built in one place, ready for Redis Cluster.

Every key of one queue carries the queue's hash tag, ``{<prefix>:<queue>}``, its
jobs' hashes included (``{P:payment}:job:<id>``), so every script touches a
single slot (tests/unit/test_keys.py checks it with redis-py's key_slot). A job
is found by id through its queue: a JobRecord knows it, and a lookup by id alone
asks each queue's slot in one pipeline, never a script across slots.

Every script receives the same named keys (``KEY_NAMES``), in this order; the
script loader binds them to a Lua table ``K`` so a script reads ``K.job``,
``K.leases`` or ``K[state]``, never a position.
"""

from jobqueue.lifecycle import FINISHED, STATES

__all__ = ["FINISHED", "KEY_NAMES", "STATES", "Keys"]

KEY_NAMES = (
    "tag",  # the queue's hash tag itself, '{P:Q}': scripts build per-queue keys on it
    # (search indexes '<tag>:idx:<field>:<value>', per-minute metric buckets '<tag>:m:<minute>')
    "job",  # hash: the job's fields (scripts over many jobs get the job-key prefix)
    "attempts",  # list: one JSON record per ended attempt
    "logs",  # list: the job's log lines (job.log), JSON, bounded per attempt
    *STATES,  # sorted sets of job ids per state
    "metrics",  # hash: '<queue>:<event>' counters
    "hist",  # hash: processing-time histogram of the queue
    "durations",  # list: the queue's last 1,000 processing times
    "paused",  # string: present while the queue is paused
    "leases",  # sorted set: active job ids by when their lease runs out
    "wake",  # list: a marker that wakes an idle worker blocked on it (BLPOP)
    "expiring",  # sorted set: pending job ids with an expiry, by when it falls
    "events",  # stream: the queue's job events (every move, progress, log), bounded
    "created",  # sorted set: every stored job id by creation time (search walks it)
    # Flow control (jobqueue.limits), decided by fetch.lua and the moves of common.lua:
    "limits",  # hash: the queue's limits (rateMax, rateMs, concurrency, groupConcurrency, ...)
    "rate",  # sorted set: job ids holding a rate slot, by when the slot was last used
    "throttle",  # string with a TTL: the gateway asked the queue to slow down (rate_limit)
    "groups",  # sorted set: group -> jobs it holds back (grouped), the backlog per group
    "gdue",  # sorted set: group -> when its rate lets its next job go
    "glimits",  # hash: group -> its own limits (JSON), over the queue's group defaults
    # Per group, built on the tag: '<tag>:g:<group>' (sorted set, its grouped jobs in order),
    # '<tag>:g:<group>:run' (set, the jobs holding its slots), '<tag>:g:<group>:rate'.
    # Deduplication keys: '<tag>:dd:<id>' (the id of the job holding it).
)


class Keys:
    """The key names of one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.workers = f"{prefix}:workers"

    def worker_wake(self, worker: str) -> str:
        """A list one worker's fetcher also blocks on: pushed when what it serves changes."""
        return f"{self.prefix}:worker:{worker}:wake"

    def tag(self, queue: str) -> str:
        """The queue's hash tag: every key of the queue starts with it, so they share a slot."""
        return f"{{{self.prefix}:{queue}}}"

    def job(self, job_id: str, queue: str) -> str:
        return f"{self.tag(queue)}:job:{job_id}"

    def queue(self, queue: str, name: str) -> str:
        """A per-queue key: a state set, 'paused', 'leases', 'wake', 'hist', 'durations', 'metrics',
        'events', 'expiring', 'created', 'limits', 'rate', 'throttle', 'groups', 'gdue', 'glimits',
        'm:<minute>', 'idx:<field>:<value>', 'g:<group>', 'dd:<id>'."""
        return f"{self.tag(queue)}:{name}"

    def for_script(self, job_id: str, queue: str) -> list[str]:
        """KEYS for a script call, in KEY_NAMES order ('' for job_id: the queue's job-key prefix)."""
        job = self.job(job_id, queue)
        named = {"tag": self.tag(queue), "job": job, "attempts": f"{job}:attempts", "logs": f"{job}:logs"}
        return [named[name] if name in named else self.queue(queue, name) for name in KEY_NAMES]
