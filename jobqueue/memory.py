"""Redis memory: the eviction policy the job store needs, and headroom for the jobs it has accepted.

The job store keeps every accepted job and the queues' pause flags in Redis. An
evicting maxmemory-policy (allkeys-lru, volatile-ttl, ...) lets Redis delete any
of them under memory pressure: accepted jobs vanish and a paused queue resumes
by itself. Only ``noeviction`` is safe; anything else is reported
(eviction_risk) unless the operator allows it explicitly.

Under noeviction a full Redis refuses writes, and finishing a job is a write. So
new jobs are refused (QueueUnavailable, a 503 at the API) once used_memory passes
a share of maxmemory (MemoryGuard), which leaves the rest for workers to move and
finish the jobs already accepted. The reading is cached for a second per process
(a tenth of a second within 10% of the limit): never one INFO per job.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from jobqueue.errors import QueueUnavailable

log = logging.getLogger("jobqueue")

SAFE_POLICY = "noeviction"
DEFAULT_MAX_SHARE = 0.9
READING_TTL_S = 1.0
NEAR_LIMIT_SHARE = 0.1


@dataclass(frozen=True)
class MemoryReading:
    used: int
    maxmemory: int  # 0: no limit set
    policy: str

    @property
    def share(self) -> float:
        """used / maxmemory; 0.0 when Redis has no limit."""
        return self.used / self.maxmemory if self.maxmemory else 0.0


def read_memory(redis: Any) -> MemoryReading:
    """One INFO memory: used bytes, maxmemory and its policy (works where CONFIG is disabled)."""
    info = redis.info("memory")
    return MemoryReading(int(info["used_memory"]), int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy", "")))


def eviction_risk(policy: str) -> str | None:
    """What an eviction policy risks for the job store, or None for noeviction."""
    if policy in ("", SAFE_POLICY):
        return None
    return (
        f"Redis maxmemory-policy is {policy}: under memory pressure Redis deletes keys, so accepted jobs "
        f"can vanish unrun and a paused queue can resume by itself; set maxmemory-policy {SAFE_POLICY} "
        "(or REDIS_ALLOW_EVICTION=true to accept the risk)"
    )


def check_eviction_policy(redis: Any, *, allow: bool = False, who: str = "") -> str | None:
    """Read the policy once; log an ERROR naming the risk unless allowed. Returns the risk, or None.

    An unreachable Redis is not this check's business (the caller finds out on first use): None.
    """
    try:
        policy = read_memory(redis).policy
    except RedisError:
        return None
    risk = eviction_risk(policy)
    if risk is None:
        return None
    if allow:
        log.warning("redis.eviction_allowed", extra={"policy": policy, "component": who})
        return None
    log.error("redis.eviction_policy", extra={"policy": policy, "component": who, "risk": risk})
    return risk


class MemoryGuard:
    """Refuses new jobs (QueueUnavailable) while Redis (plus the reserve) is past max_share of maxmemory.

    Use as a JobQueue's admission check. Thread-safe; at most one INFO per ttl seconds.
    """

    def __init__(
        self,
        redis: Any,
        max_share: float = DEFAULT_MAX_SHARE,
        *,
        reserve: Callable[[], int] | None = None,
        ttl: float = READING_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        allow_eviction: bool = False,
    ) -> None:
        """reserve(): bytes that accepted work will still write (a delayed job's lease, attempt and
        result once it runs), counted as used; read along with each INFO."""
        if not 0 < max_share <= 1:
            raise ValueError(f"max_share must be in (0, 1], not {max_share}")
        self.redis = redis
        self.max_share = max_share
        self.reserve = reserve
        self.allow_eviction = allow_eviction
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._reading: MemoryReading | None = None
        self._read_at = float("-inf")

    def reading(self) -> MemoryReading | None:
        """The cached reading, refreshed when older than ttl (a tenth of it near the limit); None if
        Redis cannot be read."""
        now = self.clock()
        with self._lock:
            if now - self._read_at < self._ttl_now():
                return self._reading
            try:
                reading = read_memory(self.redis)
                if self.reserve is not None:
                    reading = replace(reading, used=reading.used + self.reserve())
                self._reading = reading
            except RedisError:
                self._reading = None  # not cached: the add itself will meet the dead Redis
                return None
            self._read_at = now
            return self._reading

    def _ttl_now(self) -> float:
        # Within NEAR_LIMIT_SHARE of the limit, a second of adds at full speed could carry
        # Redis well past it (a few MB at 2,000 jobs/s): read ten times as often there.
        reading = self._reading
        if reading is not None and reading.maxmemory and reading.share >= self.max_share - NEAR_LIMIT_SHARE:
            return self.ttl / 10
        return self.ttl

    def __call__(self, headroom: bool = True) -> None:
        """Raise QueueUnavailable while Redis evicts (unless allowed) or, with headroom, is too full."""
        reading = self.reading()
        if reading is None:
            return
        risk = None if self.allow_eviction else eviction_risk(reading.policy)
        if risk is not None:
            # Once the store is the only queue, an evicted sorted set loses every job in it.
            raise QueueUnavailable(f"refusing new jobs: {risk}")
        if not headroom or not reading.maxmemory or reading.share < self.max_share:
            return
        log.warning(
            "jobs.refused_memory",
            extra={"used_memory": reading.used, "maxmemory": reading.maxmemory, "max_share": self.max_share},
        )
        raise QueueUnavailable(
            f"job store memory at {reading.share:.0%} of maxmemory, past the {self.max_share:.0%} kept for "
            "accepted jobs to finish"
        )
