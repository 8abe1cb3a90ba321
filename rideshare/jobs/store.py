"""The job store: every job's state, data, options and attempts, kept in Redis.

Layout under a prefix P (default ``rideshare``):

- ``P:job:<id>``: a hash with the job's fields;
- ``P:job:<id>:attempts``: a list of JSON attempt records;
- ``P:<queue>:<state>``: a sorted set of job ids per state, scored by time (ms).

A job moves between the sorted sets inside one Lua script, so the counts per
state are ZCARDs (O(queues)), never a scan, and they stay right while jobs
are trimmed.
"""

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

STATES = ("waiting", "delayed", "active", "completed", "failed")
FINISHED = ("completed", "failed")

# Shared by the scripts: drop one job and its attempt log from the store.
_LUA_REMOVE = """
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

# KEYS: job, attempts, waiting, delayed, active, completed, failed
# ARGV: state, score, field/value pairs...
_LUA_CREATE = _LUA_REMOVE + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'state', ARGV[1], unpack(fields))
redis.call('ZADD', state_key(ARGV[1]), ARGV[2], redis.call('HGET', KEYS[1], 'id'))
return 1
"""

# Moves a job to 'active' and returns its fields; finished jobs are left alone.
# KEYS: as above. ARGV: now, worker
_LUA_START = _LUA_REMOVE + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
if state == 'completed' or state == 'failed' then
  return redis.call('HGETALL', KEYS[1])
end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', state_key(state), id)
redis.call('ZADD', KEYS[5], ARGV[1], id)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'active', 'processedOn', ARGV[1], 'worker', ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""

# Ends an attempt: records it, moves the job to its next state, then trims
# that state's set to the job's retention.
# KEYS: as above. ARGV: prefix, state, score, now, keep_count (-1 = all),
#       keep_age_ms (-1 = any age), attempt_json, field/value pairs...
_LUA_FINISH = _LUA_REMOVE + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
local prefix, target, score = ARGV[1], ARGV[2], ARGV[3]
local now, keep_count, keep_age = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', state_key(state), id)
local zset = state_key(target)
redis.call('ZADD', zset, score, id)
redis.call('HSET', KEYS[1], 'state', target)
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[7] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[7]) end
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

# KEYS: as above. Removes one job wherever it is.
_LUA_DELETE = _LUA_REMOVE + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', state_key(state), id)
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


def now_ms() -> int:
    """Wall-clock time in milliseconds, the unit BullMQ uses for timestamps."""
    return int(time.time() * 1000)


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
    extra: dict[str, str] = field(default_factory=dict)

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
        )


def _pairs(raw: Iterable[str]) -> dict[str, str]:
    items = list(raw)
    return dict(zip(items[0::2], items[1::2], strict=True))


class JobStore:
    """Reads and moves jobs; every state change is one atomic script call."""

    def __init__(self, client: redis.Redis, prefix: str = "rideshare") -> None:
        self.redis = client
        self.prefix = prefix
        self._create = client.register_script(_LUA_CREATE)
        self._start = client.register_script(_LUA_START)
        self._finish = client.register_script(_LUA_FINISH)
        self._delete = client.register_script(_LUA_DELETE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "rideshare") -> "JobStore":
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        return cls(client, prefix)

    def _keys(self, job_id: str, queue: str) -> list[str]:
        job = f"{self.prefix}:job:{job_id}"
        return [job, f"{job}:attempts", *(f"{self.prefix}:{queue}:{s}" for s in STATES)]

    def create(self, record: JobRecord, score: int) -> bool:
        """Store a new job in its first state; False if that id already exists."""
        fields = {
            "id": record.id,
            "queue": record.queue,
            "name": record.name,
            "data": json.dumps(record.data, separators=(",", ":")),
            "opts": json.dumps(record.opts, separators=(",", ":")),
            "owner": record.owner or "",
            "attempts": 0,
            "createdAt": record.created_at,
        }
        flat = [v for kv in fields.items() for v in kv]
        created = self._create(keys=self._keys(record.id, record.queue), args=[record.state, score, *flat])
        return bool(created)

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None if it was never created or has been removed."""
        raw = self.redis.hgetall(f"{self.prefix}:job:{job_id}")
        return JobRecord.from_hash(raw) if raw else None

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """The attempt log of a job, oldest first."""
        return [json.loads(a) for a in self.redis.lrange(f"{self.prefix}:job:{job_id}:attempts", 0, -1)]

    def start(self, job_id: str, queue: str, worker: str) -> JobRecord | None:
        """Mark a job active and return it; a finished job comes back unchanged."""
        raw = self._start(keys=self._keys(job_id, queue), args=[now_ms(), worker])
        return JobRecord.from_hash(_pairs(raw)) if raw else None

    def finish(
        self,
        record: JobRecord,
        state: str,
        *,
        score: int,
        retention: Retention = Retention(),
        attempt: Mapping[str, Any] | None = None,
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
                json.dumps(attempt, separators=(",", ":")) if attempt else "",
                *flat,
            ],
        )

    def delete(self, job_id: str, queue: str) -> bool:
        """Remove a job and its attempt log."""
        return bool(self._delete(keys=self._keys(job_id, queue)))

    def counts(self, queue: str) -> dict[str, int]:
        """Jobs per state in one queue: a ZCARD per state, no scan."""
        with self.redis.pipeline(transaction=False) as pipe:
            for state in STATES:
                pipe.zcard(f"{self.prefix}:{queue}:{state}")
            return dict(zip(STATES, pipe.execute(), strict=True))
