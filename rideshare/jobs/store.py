"""The job store: every job's state, data, options and attempts, kept in Redis.

Layout under a prefix P (default ``rideshare``):

- ``P:job:<id>``: a hash with the job's fields;
- ``P:job:<id>:attempts``: a list of JSON attempt records;
- ``P:<queue>:<state>``: a sorted set of job ids per state, scored by time (ms);
- ``P:<queue>:paused``: present while the queue is paused;
- ``P:metrics``: counters per queue (added, completed, failed, retried);
- ``P:<queue>:hist``: processing-time histogram buckets, with sum and count;
- ``P:<queue>:durations``: the last 1,000 processing times (ms);
- ``P:<queue>:tp:<completed|failed>:<10 s bucket>``: finishes per 10 s, kept 2 h;
- ``P:<queue>:leases``: active job ids, scored by when their lease runs out;
- ``P:workers``: a heartbeat per worker with the queues it consumes.

A job moves between the sorted sets inside one Lua script, so the counts per
state are ZCARDs (O(queues)), never a scan, and they stay right while jobs
are trimmed.
"""

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from rideshare.jobs.sealing import Sealer

STATES = ("waiting", "delayed", "active", "completed", "failed")
FINISHED = ("completed", "failed")
# Upper bounds (seconds) of the processing-time histogram, as Prometheus expects.
HISTOGRAM_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
THROUGHPUT_BUCKET_MS = 10_000
WORKER_TTL_MS = 30_000

# Helpers shared by the scripts. KEYS: job, attempts, the five state sets,
# metrics, histogram, durations, paused flag, leases (see JobStore._keys).
#
# Delivery: every message carries the job's delivery number ('seq'). Each
# publish bumps it, so an older message for the same job (a broker
# redelivery, a restored unacked message) no longer matches and is skipped.
_LUA_COMMON = """
local function remove_job(prefix, zset, id)
  redis.call('ZREM', zset, id)
  redis.call('DEL', prefix .. ':job:' .. id, prefix .. ':job:' .. id .. ':attempts')
end
local function state_key(state)
  for i, name in ipairs({'waiting', 'delayed', 'active', 'completed', 'failed'}) do
    if name == state then return KEYS[2 + i] end
  end
  return nil
end
"""

# ARGV: state, score, queue, field/value pairs...
_LUA_CREATE = (
    _LUA_COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'state', ARGV[1], unpack(fields))
redis.call('ZADD', state_key(ARGV[1]), ARGV[2], redis.call('HGET', KEYS[1], 'id'))
redis.call('HINCRBY', KEYS[8], ARGV[3] .. ':added', 1)
return 1
"""
)

# Moves a job to 'active' under a lease and returns its fields. Finished jobs
# come back unchanged; otherwise the answer is 'stale' (an older message),
# 'paused' (the queue is paused), or 'leased' (another delivery of this same
# message may still be running: the lease sweep takes it over if it died).
# ARGV: now, worker, seq ('' = skip the check), lease_ms
_LUA_START = (
    _LUA_COMMON
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
if state == 'completed' or state == 'failed' then
  return redis.call('HGETALL', KEYS[1])
end
if ARGV[3] ~= '' and ARGV[3] ~= redis.call('HGET', KEYS[1], 'seq') then return 'stale' end
if redis.call('EXISTS', KEYS[11]) == 1 and state ~= 'active' then return 'paused' end
local now = tonumber(ARGV[1])
if state == 'active' and tonumber(redis.call('HGET', KEYS[1], 'leaseUntil') or 0) > now then
  return 'leased'
end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', state_key(state), id)
redis.call('ZADD', KEYS[5], now, id)
local lease = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[12], lease, id)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'active', 'processedOn', now, 'worker', ARGV[2], 'leaseUntil', lease)
return redis.call('HGETALL', KEYS[1])
"""
)

# Due delayed jobs (delays and retry backoffs) become waiting, each with a new
# delivery number for the message the caller then publishes.
# ARGV: now, limit. Returns id, seq, id, seq, ...
_LUA_PROMOTE = (
    _LUA_COMMON
    + """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))) do
  local job = KEYS[1] .. id
  redis.call('ZREM', KEYS[4], id)
  if redis.call('HGET', job, 'state') == 'delayed' then
    redis.call('ZADD', KEYS[3], ARGV[1], id)
    redis.call('HSET', job, 'state', 'waiting')
    out[#out + 1] = id
    out[#out + 1] = redis.call('HINCRBY', job, 'seq', 1)
  end
end
return out
"""
)

# Jobs whose lease ran out while active: their worker died (SIGKILL, OOM, a
# lost host). Each goes back to waiting with a new delivery number, until it
# has stalled more than max_stalls times; then it fails (a poison message).
# Waiting jobs older than stale_ms get a new delivery number too, in case
# their message was lost between the store and the broker.
# ARGV: now, limit, max_stalls, stale_ms (-1 = skip). Returns id, seq, ... to publish.
_LUA_RECOVER = (
    _LUA_COMMON
    + """
local now, limit, max_stalls = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[12], '-inf', now, 'LIMIT', 0, limit)) do
  local job = KEYS[1] .. id
  redis.call('ZREM', KEYS[12], id)
  if redis.call('HGET', job, 'state') == 'active' and tonumber(redis.call('HGET', job, 'leaseUntil') or 0) <= now then
    redis.call('ZREM', KEYS[5], id)
    local stalls = redis.call('HINCRBY', job, 'stalls', 1)
    if stalls > max_stalls then
      redis.call('ZADD', KEYS[7], now, id)
      redis.call('HSET', job, 'state', 'failed', 'finishedAt', now,
        'failedReason', 'stalled: its worker was lost ' .. stalls .. ' times (poison job?)')
      redis.call('HINCRBY', KEYS[8], redis.call('HGET', job, 'queue') .. ':failed', 1)
      redis.call('HINCRBY', job, 'seq', 1)
    else
      redis.call('ZADD', KEYS[3], now, id)
      redis.call('HSET', job, 'state', 'waiting')
      out[#out + 1] = id
      out[#out + 1] = redis.call('HINCRBY', job, 'seq', 1)
    end
  end
end
local stale_ms = tonumber(ARGV[4])
if stale_ms >= 0 and redis.call('EXISTS', KEYS[11]) == 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - stale_ms, 'LIMIT', 0, limit)) do
    redis.call('ZADD', KEYS[3], now, id)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HINCRBY', KEYS[1] .. id, 'seq', 1)
  end
end
return out
"""
)

# Ends an attempt: records it and its metrics, moves the job to its next state
# (completed, failed, or delayed for a retry), then trims that state's set to
# the job's retention.
# ARGV: prefix, state, score, now, keep_count (-1 = all), keep_age_ms (-1 = any),
#       attempt_json, queue, duration_ms, histogram field, field/value pairs...
_LUA_FINISH = (
    _LUA_COMMON
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
local prefix, target, score = ARGV[1], ARGV[2], ARGV[3]
local now, keep_count, keep_age = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local queue, duration = ARGV[8], ARGV[9]
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', state_key(state), id)
redis.call('ZREM', KEYS[12], id)
local zset = state_key(target)
redis.call('ZADD', zset, score, id)
redis.call('HSET', KEYS[1], 'state', target)
redis.call('HINCRBY', KEYS[1], 'seq', 1)
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[7] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[7]) end
-- Metrics: counters, processing-time histogram and recent durations, throughput.
local event = target
if target == 'delayed' then event = 'retried' end
redis.call('HINCRBY', KEYS[8], queue .. ':' .. event, 1)
if duration ~= '' then
  redis.call('HINCRBY', KEYS[9], ARGV[10], 1)
  redis.call('HINCRBY', KEYS[9], 'count', 1)
  redis.call('HINCRBYFLOAT', KEYS[9], 'sum', tonumber(duration) / 1000)
  redis.call('LPUSH', KEYS[10], duration)
  redis.call('LTRIM', KEYS[10], 0, 999)
end
if target ~= 'delayed' then
  local tp = prefix .. ':' .. queue .. ':tp:' .. target .. ':' .. math.floor(now / 10000)
  redis.call('INCR', tp)
  redis.call('EXPIRE', tp, 7300)
end
-- Retention.
if keep_count == 0 then
  remove_job(prefix, zset, id)
  return state
end
if keep_age >= 0 then
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. (now - keep_age))) do
    remove_job(prefix, zset, old)
  end
end
if keep_count > 0 then
  for _, old in ipairs(redis.call('ZRANGE', zset, 0, -(keep_count + 1))) do
    remove_job(prefix, zset, old)
  end
end
return state
"""
)

# Puts a failed job back to waiting, optionally with new data; returns the new
# delivery number, or the state the job is in instead.
# ARGV: now, data ('' = keep)
_LUA_RETRY = (
    _LUA_COMMON
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
if state ~= 'failed' then return state end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', KEYS[7], id)
redis.call('ZADD', KEYS[3], ARGV[1], id)
redis.call('HSET', KEYS[1], 'state', 'waiting', 'failedReason', '', 'finishedAt', '', 'stalls', 0)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'data', ARGV[2]) end
return redis.call('HINCRBY', KEYS[1], 'seq', 1)
"""
)

# Waiting jobs whose message could not be published go back to delayed, due soon.
# ARGV: due, ids...
_LUA_DEFER = (
    _LUA_COMMON
    + """
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[1] .. id, 'state') == 'waiting' then
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZADD', KEYS[4], ARGV[1], id)
    redis.call('HSET', KEYS[1] .. id, 'state', 'delayed')
  end
end
return #ARGV - 1
"""
)

# Removes one job wherever it is, unless it is active. ARGV: (none)
_LUA_DELETE = (
    _LUA_COMMON
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
if state == 'active' then return state end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', state_key(state), id)
redis.call('DEL', KEYS[1], KEYS[2])
return 'deleted'
"""
)

# Removes up to limit jobs of one state older than a cut-off. ARGV: prefix, state, cutoff, limit
_LUA_CLEAN = (
    _LUA_COMMON
    + """
local zset = state_key(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do remove_job(ARGV[1], zset, id) end
return ids
"""
)

# Forgets a job the broker never received. ARGV: queue
_LUA_DISCARD = (
    _LUA_COMMON
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
redis.call('ZREM', state_key(state), redis.call('HGET', KEYS[1], 'id'))
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HINCRBY', KEYS[8], ARGV[1] .. ':added', -1)
return 1
"""
)


def now_ms() -> int:
    """Wall-clock time in milliseconds, the unit BullMQ uses for timestamps."""
    return int(time.time() * 1000)


def histogram_field(duration_ms: float) -> str:
    """The histogram bucket a processing time falls in ('le' bound, or '+Inf')."""
    seconds = duration_ms / 1000
    for bound in HISTOGRAM_BOUNDS:
        if seconds <= bound:
            return str(bound)
    return "+Inf"


@dataclass(frozen=True)
class Retention:
    """How many finished jobs of one state to keep: BullMQ's removeOnComplete/removeOnFail."""

    count: int = -1  # -1: keep all; 0: remove at once; N: keep the newest N
    age_ms: int = -1  # -1: any age; else drop jobs finished longer ago than this

    @classmethod
    def parse(cls, value: Any, default: "Retention") -> "Retention":
        """Read True, False, a count or {"age": seconds, "count": n}, as BullMQ does."""
        if value is None:
            return default
        if value is True:
            return cls(count=0)
        if value is False:
            return cls()
        if isinstance(value, int) and value >= 0:
            return cls(count=value)
        if isinstance(value, Mapping) and set(value) <= {"age", "count"} and value:
            age, count = value.get("age"), value.get("count")
            if all(v is None or (isinstance(v, int) and v >= 0) for v in (age, count)):
                return cls(
                    count=-1 if count is None else count,
                    age_ms=-1 if age is None else age * 1000,
                )
        raise ValueError("must be true, false, a count, or {'age': seconds, 'count': n}")


@dataclass
class JobRecord:
    """One job as the store holds it."""

    id: str
    queue: str
    name: str
    state: str
    data: dict[str, Any]
    opts: dict[str, Any]
    owner: str | None = None
    attempts: int = 0
    result: Any = None
    failed_reason: str | None = None
    created_at: int = 0
    processed_on: int | None = None
    finished_at: int | None = None
    worker: str | None = None
    seq: int = 0
    stalls: int = 0

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> "JobRecord":
        def opt_int(name: str) -> int | None:
            return int(raw[name]) if raw.get(name) else None

        return cls(
            id=raw["id"],
            queue=raw["queue"],
            name=raw["name"],
            state=raw["state"],
            data=json.loads(raw.get("data") or "{}"),
            opts=json.loads(raw.get("opts") or "{}"),
            owner=raw.get("owner") or None,
            attempts=int(raw.get("attempts") or 0),
            result=json.loads(raw["result"]) if raw.get("result") else None,
            failed_reason=raw.get("failedReason") or None,
            created_at=int(raw.get("createdAt") or 0),
            processed_on=opt_int("processedOn"),
            finished_at=opt_int("finishedAt"),
            worker=raw.get("worker") or None,
            seq=int(raw.get("seq") or 0),
            stalls=int(raw.get("stalls") or 0),
        )


@dataclass(frozen=True)
class QueueActivity:
    """Finishes over the last minute and hour, and processing times of recent jobs."""

    completed_last_minute: int
    failed_last_minute: int
    completed_last_hour: int
    failed_last_hour: int
    mean_ms: float | None
    p95_ms: float | None


def _pairs(raw: Iterable[str]) -> dict[str, str]:
    items = list(raw)
    return dict(zip(items[0::2], items[1::2], strict=True))


def to_json(value: Any) -> str:
    """Compact JSON, as the job store keeps values (anything else as its str)."""
    return json.dumps(value, separators=(",", ":"), default=str)


class JobStore:
    """Reads and moves jobs; every state change is one atomic script call."""

    def __init__(self, client: redis.Redis, prefix: str = "rideshare", sealer: Sealer | None = None) -> None:
        self.redis = client
        self.prefix = prefix
        self.sealer = sealer
        self._create = client.register_script(_LUA_CREATE)
        self._start = client.register_script(_LUA_START)
        self._finish = client.register_script(_LUA_FINISH)
        self._retry = client.register_script(_LUA_RETRY)
        self._promote = client.register_script(_LUA_PROMOTE)
        self._defer = client.register_script(_LUA_DEFER)
        self._recover = client.register_script(_LUA_RECOVER)
        self._delete = client.register_script(_LUA_DELETE)
        self._clean = client.register_script(_LUA_CLEAN)
        self._discard = client.register_script(_LUA_DISCARD)

    @classmethod
    def from_url(cls, url: str, prefix: str = "rideshare", sealer: Sealer | None = None) -> "JobStore":
        # Fail fast when Redis is away: a job's bookkeeping must not outlast its timeout.
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            health_check_interval=30,
            socket_connect_timeout=2,
            socket_timeout=10,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
        return cls(client, prefix, sealer)

    def _seal(self, data: Any) -> str:
        return to_json(self.sealer.seal(data) if self.sealer else data)

    def _record(self, raw: Mapping[str, str]) -> JobRecord:
        record = JobRecord.from_hash(raw)
        if self.sealer:
            record.data = self.sealer.unseal(record.data)
        return record

    def _keys(self, job_id: str, queue: str) -> list[str]:
        job = f"{self.prefix}:job:{job_id}"
        q = f"{self.prefix}:{queue}"
        return [
            job,
            f"{job}:attempts",
            *(f"{q}:{s}" for s in STATES),
            f"{self.prefix}:metrics",
            f"{q}:hist",
            f"{q}:durations",
            f"{q}:paused",
            f"{q}:leases",
        ]

    # -- the life of one job -------------------------------------------------

    def create(self, record: JobRecord, score: int, client: Any = None) -> bool:
        """Store a new job in its first state; False if that id already exists."""
        fields = {
            "id": record.id,
            "queue": record.queue,
            "name": record.name,
            "data": self._seal(record.data),
            "opts": to_json(record.opts),
            "owner": record.owner or "",
            "attempts": 0,
            "createdAt": record.created_at,
            # A waiting job is published at once as delivery 1; a delayed one gets its
            # number when it is promoted.
            "seq": 1 if record.state == "waiting" else 0,
        }
        flat = [v for kv in fields.items() for v in kv]
        keys = self._keys(record.id, record.queue)
        return bool(self._create(keys=keys, args=[record.state, score, record.queue, *flat], client=client))

    def create_many(self, records: list[JobRecord], scores: list[int]) -> list[bool]:
        """create() for many jobs in one round trip; each flag says whether that job is new."""
        with self.redis.pipeline(transaction=False) as pipe:
            for record, score in zip(records, scores, strict=True):
                self.create(record, score, client=pipe)
            return [bool(created) for created in pipe.execute()]

    def discard(self, job_id: str, queue: str) -> bool:
        """Forget a job that was never published (the broker refused it)."""
        return bool(self._discard(keys=self._keys(job_id, queue), args=[queue]))

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None if it was never created or has been removed."""
        raw = self.redis.hgetall(f"{self.prefix}:job:{job_id}")
        return self._record(raw) if raw else None

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """The attempt log of a job, oldest first."""
        return [json.loads(a) for a in self.redis.lrange(f"{self.prefix}:job:{job_id}:attempts", 0, -1)]

    def start(
        self, job_id: str, queue: str, worker: str, *, seq: int | None = None, lease_ms: int = 60_000
    ) -> JobRecord | str | None:
        """Mark a job active under a lease of lease_ms and return it.

        A finished job comes back unchanged. Otherwise the job is left as it is
        and the answer is None (unknown job), "stale" (the message's delivery
        number seq is not the job's latest), "paused" (its queue is paused) or
        "leased" (this delivery may still be running elsewhere).
        """
        raw = self._start(keys=self._keys(job_id, queue), args=[now_ms(), worker, "" if seq is None else seq, lease_ms])
        if isinstance(raw, str):
            return raw
        return self._record(_pairs(raw)) if raw else None

    def promote(self, queue: str, limit: int = 500) -> list[tuple[str, int]]:
        """Move due delayed jobs to waiting; returns (id, delivery number) pairs to publish."""
        raw = self._promote(keys=self._keys("", queue), args=[now_ms(), limit])
        return [(raw[i], int(raw[i + 1])) for i in range(0, len(raw), 2)]

    def defer(self, job_ids: list[str], queue: str, delay_ms: int) -> None:
        """Put waiting jobs whose message was not published back to delayed, due after delay_ms."""
        if job_ids:
            self._defer(keys=self._keys("", queue), args=[now_ms() + delay_ms, *job_ids])

    def recover(self, queue: str, *, max_stalls: int, stale_ms: int = -1, limit: int = 500) -> list[tuple[str, int]]:
        """Requeue jobs whose worker died (or fail them past max_stalls); returns pairs to publish."""
        raw = self._recover(keys=self._keys("", queue), args=[now_ms(), limit, max_stalls, stale_ms])
        return [(raw[i], int(raw[i + 1])) for i in range(0, len(raw), 2)]

    def finish(
        self,
        record: JobRecord,
        state: str,
        *,
        score: int,
        retention: Retention = Retention(),
        attempt: Mapping[str, Any] | None = None,
        duration_ms: float | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Move a job to state (completed, failed, or delayed for a retry) and trim that state."""
        flat = [str(v) for kv in (fields or {}).items() for v in kv]
        return self._finish(
            keys=self._keys(record.id, record.queue),
            args=[
                self.prefix,
                state,
                score,
                now_ms(),
                retention.count,
                retention.age_ms,
                to_json(attempt) if attempt else "",
                record.queue,
                "" if duration_ms is None else duration_ms,
                histogram_field(duration_ms or 0),
                *flat,
            ],
        )

    def retry(self, job_id: str, queue: str, data: Mapping[str, Any] | None = None) -> int | str | None:
        """Move a failed job back to waiting: its new delivery number, the state it is in instead, or None."""
        return self._retry(
            keys=self._keys(job_id, queue), args=[now_ms(), self._seal(data) if data is not None else ""]
        )

    def delete(self, job_id: str, queue: str) -> str | None:
        """Remove a job: 'deleted', 'active' if it is running (left alone), or None."""
        return self._delete(keys=self._keys(job_id, queue))

    def clean(self, queue: str, state: str, grace_ms: int, limit: int) -> list[str]:
        """Remove up to limit jobs in state that reached it more than grace_ms ago."""
        cutoff = now_ms() - grace_ms
        return self._clean(keys=self._keys("-", queue), args=[self.prefix, state, cutoff, limit])

    # -- queues ----------------------------------------------------------------

    def counts(self, queue: str) -> dict[str, int]:
        """Jobs per state in one queue: a ZCARD per state, no scan.

        While the queue is paused its waiting jobs are counted as paused, as in BullMQ.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            for state in STATES:
                pipe.zcard(f"{self.prefix}:{queue}:{state}")
            pipe.exists(f"{self.prefix}:{queue}:paused")
            *sizes, paused = pipe.execute()
        counts = dict(zip(STATES, sizes, strict=True))
        counts["paused"] = counts["waiting"] if paused else 0
        if paused:
            counts["waiting"] = 0
        return counts

    def is_paused(self, queue: str) -> bool:
        return bool(self.redis.exists(f"{self.prefix}:{queue}:paused"))

    def paused_queues(self, queues: Iterable[str]) -> set[str]:
        """Which of queues are paused, in one round trip."""
        names = list(queues)
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(f"{self.prefix}:{name}:paused")
            return {name for name, flag in zip(names, pipe.execute(), strict=True) if flag}

    def set_paused(self, queue: str, paused: bool) -> None:
        key = f"{self.prefix}:{queue}:paused"
        if paused:
            self.redis.set(key, now_ms())
        else:
            self.redis.delete(key)

    def list_jobs(self, queue: str, states: Iterable[str], *, offset: int = 0, limit: int = 50) -> list[JobRecord]:
        """Jobs of the given states, newest first (by the time they entered the state)."""
        entries: list[tuple[float, str]] = []
        with self.redis.pipeline(transaction=False) as pipe:
            for state in states:
                pipe.zrevrange(f"{self.prefix}:{queue}:{state}", 0, offset + limit - 1, withscores=True)
            for batch in pipe.execute():
                entries.extend((score, job_id) for job_id, score in batch)
        entries.sort(reverse=True)
        page = [job_id for _, job_id in entries[offset : offset + limit]]
        return [job for job in self.get_many(page) if job is not None]

    def ids_in_state(self, queue: str, state: str, limit: int = 10_000) -> list[str]:
        """Ids of up to limit jobs in one state, oldest first."""
        return self.redis.zrange(f"{self.prefix}:{queue}:{state}", 0, limit - 1)

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(f"{self.prefix}:job:{job_id}")
            return [self._record(raw) if raw else None for raw in pipe.execute()]

    def activity(self, queue: str) -> QueueActivity:
        """Completed and failed jobs in the last minute and hour; mean and p95 of recent jobs."""
        bucket = now_ms() // THROUGHPUT_BUCKET_MS
        per_hour = 3600_000 // THROUGHPUT_BUCKET_MS
        per_minute = 60_000 // THROUGHPUT_BUCKET_MS
        sums: dict[str, tuple[int, int]] = {}
        with self.redis.pipeline(transaction=False) as pipe:
            for state in FINISHED:
                keys = [f"{self.prefix}:{queue}:tp:{state}:{b}" for b in range(bucket - per_hour + 1, bucket + 1)]
                pipe.mget(keys)
            pipe.lrange(f"{self.prefix}:{queue}:durations", 0, -1)
            *buckets, durations = pipe.execute()
        for state, values in zip(FINISHED, buckets, strict=True):
            counts = [int(v or 0) for v in values]
            sums[state] = (sum(counts[-per_minute:]), sum(counts))
        times = sorted(float(d) for d in durations)
        mean = sum(times) / len(times) if times else None
        p95 = times[max(math.ceil(0.95 * len(times)) - 1, 0)] if times else None
        return QueueActivity(
            completed_last_minute=sums["completed"][0],
            failed_last_minute=sums["failed"][0],
            completed_last_hour=sums["completed"][1],
            failed_last_hour=sums["failed"][1],
            mean_ms=mean,
            p95_ms=p95,
        )

    def metrics(self) -> dict[str, int]:
        """The counters: '<queue>:added|completed|failed|retried' -> total."""
        return {k: int(v) for k, v in self.redis.hgetall(f"{self.prefix}:metrics").items()}

    def histogram(self, queue: str) -> dict[str, float]:
        """Processing-time histogram buckets of one queue (not cumulative), with sum and count."""
        return {k: float(v) for k, v in self.redis.hgetall(f"{self.prefix}:{queue}:hist").items()}

    # -- workers ---------------------------------------------------------------

    def heartbeat(self, worker: str, info: Mapping[str, Any]) -> None:
        """Record that worker is alive and which queues it consumes."""
        self.redis.hset(f"{self.prefix}:workers", worker, to_json({**info, "lastSeen": now_ms()}))

    def workers(self) -> dict[str, dict[str, Any]]:
        """Workers seen in the last 30 s, with their queues; stale entries are dropped."""
        raw = self.redis.hgetall(f"{self.prefix}:workers")
        alive, stale = {}, []
        for name, value in raw.items():
            info = json.loads(value)
            if now_ms() - info.get("lastSeen", 0) <= WORKER_TTL_MS:
                alive[name] = info
            else:
                stale.append(name)
        if stale:
            self.redis.hdel(f"{self.prefix}:workers", *stale)
        return alive

    def forget_worker(self, worker: str) -> None:
        self.redis.hdel(f"{self.prefix}:workers", worker)
