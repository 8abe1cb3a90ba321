"""Job states and the Redis keys of the job store, built in one place from one list of states.

Every script receives the same named keys (``KEY_NAMES``), in this order; the
script loader binds them to a Lua table ``K`` so a script reads ``K.job``,
``K.leases`` or ``K[state]``, never a position.
"""

# A job's life: waiting -> active -> completed | failed, with delayed for delays and backoffs.
STATES = ("waiting", "delayed", "active", "completed", "failed")
FINISHED = ("completed", "failed")

KEY_NAMES = (
    "job",  # hash: the job's fields
    "attempts",  # list: one JSON record per ended attempt
    *STATES,  # sorted sets of job ids per state, scored by when the job entered it (ms)
    "metrics",  # hash: '<queue>:<event>' counters
    "hist",  # hash: processing-time histogram of the queue
    "durations",  # list: the queue's last 1,000 processing times
    "paused",  # string: present while the queue is paused
    "leases",  # sorted set: active job ids by when their lease runs out
    "claims",  # sorted set: waiting job ids held in a live worker's prefetch buffer, by claim expiry
    "broker",  # list: the broker queue a new message goes to (Redis broker), or '' for none
)


class Keys:
    """The key names of one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.metrics = f"{prefix}:metrics"
        self.workers = f"{prefix}:workers"
        self.deadletter = f"{prefix}:deadletter"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def queue(self, queue: str, name: str) -> str:
        """A per-queue key: a state set, 'paused', 'leases', 'claims', 'hist', 'durations'."""
        return f"{self.prefix}:{queue}:{name}"

    def for_script(self, job_id: str, queue: str, broker: str = "") -> list[str]:
        """KEYS for a script call, in KEY_NAMES order."""
        job = self.job(job_id)
        per_queue = {name: self.queue(queue, name) for name in (*STATES, "hist", "durations", "paused", "leases")}
        named = {
            "job": job,
            "attempts": f"{job}:attempts",
            "metrics": self.metrics,
            "claims": self.queue(queue, "claims"),
            "broker": broker,
            **per_queue,
        }
        return [named[name] for name in KEY_NAMES]
