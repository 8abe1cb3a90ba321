"""The job store: every job's state, data, options and attempts, kept in Redis.

Layout under a prefix P (default ``jobqueue``); every key of a queue Q starts with
its hash tag ``{P:Q}``, so one queue lives in one Redis Cluster slot:

- ``{P:Q}:job:<id>``: a hash with the job's fields;
- ``{P:Q}:job:<id>:attempts``: a list of JSON attempt records;
- ``{P:Q}:<state>``: a sorted set of job ids per state, scored by time (ms);
  waiting is scored priority * PRIORITY_STEP + time, so fetch takes the first;
- ``{P:Q}:paused``: present while the queue is paused;
- ``{P:Q}:metrics``: the queue's counters ('<Q>:added', completed, failed, retried, ...);
- ``{P:Q}:hist``: processing-time histogram buckets, with sum and count;
- ``{P:Q}:durations``: the last 1,000 processing times (ms);
- ``{P:Q}:m:<minute>``: the per-minute buckets (counts, wait and processing times), kept 73 h;
- ``{P:Q}:leases``: active job ids, scored by when their lease runs out;
- ``{P:Q}:wake``: a marker list idle workers block on (BLPOP);
- ``P:workers``: a heartbeat per worker with the queues it consumes.

A job moves between the sorted sets inside one Lua script, and only by a row of
jobqueue.lifecycle.TRANSITIONS, so the counts per
state are ZCARDs (O(queues)), never a scan, and they stay right while jobs
are trimmed.
"""

import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from jobqueue import scripts
from jobqueue.errors import JobCancelled
from jobqueue.keys import FINISHED, STATES, Keys
from jobqueue.lifecycle import PRIORITY_STEP
from jobqueue.scripts import DEFAULT_FEATURES, MINUTE_BOUNDS_MS, Features
from jobqueue.sealing import Sealer

# Upper bounds (seconds) of the processing-time histogram, as Prometheus expects.
HISTOGRAM_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MAX_PROGRESS_CHARS = 2_000
WORKER_TTL_MS = 30_000


class StaleDelivery(Exception):
    """A worker's state change for a delivery that is no longer the job's current one: refused."""


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
    stalls: int = 0
    token: str = ""  # the current delivery's fencing token, set when a worker fetches it
    priority: int = 0
    progress: Any = None  # the last job.update_progress value
    cancel_reason: str | None = None  # why it was cancelled (state cancelled)
    cancel_requested: str | None = None  # a cancel asked while it ran (state active)
    expires_at: int | None = None  # ms: a job not started by then ends expired
    snoozes: int = 0
    rate_limits: int = 0  # times the gateway's back-pressure sent it back to waiting
    tags: list[str] = field(default_factory=list)  # 'field:value', what search finds it by
    trace: str = ""  # the trace context of the span that added it (jobqueue.tracing), "" untraced
    raw: Mapping[str, str] | None = field(default=None, repr=False, compare=False)  # the hash it was read from
    # The store it came from, for a running job's own calls (update_progress, log, ...).
    store: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_hash(cls, raw: Mapping[str, str], strict: bool = True, data: bool = True) -> "JobRecord":
        """The record of a stored hash; strict=False reads a field that is not JSON as
        {"_unreadable": <its start>} instead of raising (for showing a corrupt job, not running it).
        data=False leaves the data unread ({}): the fetcher hands the hash on whole."""

        def opt_int(name: str) -> int | None:
            return int(raw[name]) if raw.get(name) else None

        def parse(name: str, default: str) -> Any:
            try:
                return json.loads(raw.get(name) or default)
            except ValueError:
                if strict:
                    raise
                return {"_unreadable": str(raw.get(name))[:200]}

        return cls(
            id=raw["id"],
            queue=raw["queue"],
            name=raw["name"],
            state=raw["state"],
            data=parse("data", "{}") if data else {},
            opts=parse("opts", "{}"),
            owner=raw.get("owner") or None,
            attempts=int(raw.get("attempts") or 0),
            result=parse("result", "null"),
            failed_reason=raw.get("failedReason") or None,
            created_at=int(raw.get("createdAt") or 0),
            processed_on=opt_int("processedOn"),
            finished_at=opt_int("finishedAt"),
            worker=raw.get("worker") or None,
            stalls=int(raw.get("stalls") or 0),
            token=raw.get("token") or "",
            priority=int(raw.get("priority") or 0),
            progress=parse("progress", "null"),
            cancel_reason=raw.get("cancelReason") or None,
            cancel_requested=raw.get("cancelRequested") or None,
            expires_at=opt_int("expiresAt"),
            snoozes=int(raw.get("snoozes") or 0),
            rate_limits=int(raw.get("rateLimits") or 0),
            tags=parse("tags", "[]") if raw.get("tags") else [],
            trace=raw.get("trace", ""),
            raw=raw,
        )

    # -- what a running job calls (its task gets the record bound to the store) --------

    def _own_store(self) -> "JobStore":
        if self.store is None:
            raise RuntimeError(f"job {self.id} is not bound to a job store")
        return self.store

    def update_progress(self, value: Any) -> None:
        """Report progress: a number, or a small JSON object ({"step": "charging"}).

        Seen by GET /jobs/<id>, the dashboard and the events stream at once. Fenced: a
        delivery that no longer holds the job changes nothing (StaleDelivery).
        """
        self._own_store().progress(self, value)

    def log(self, line: str) -> None:
        """Add a line to this attempt's log (bounded in number and length)."""
        self._own_store().log(self, line)

    def is_cancelled(self) -> bool:
        """Whether a cancel was asked for this running job (one read of the store)."""
        reason = self._own_store().redis.hget(self.store.keys.job(self.id, self.queue), "cancelRequested")
        if reason:
            self.cancel_requested = reason
        return bool(reason)

    def raise_if_cancelled(self) -> None:
        """A check point: raise JobCancelled if a cancel was asked (the job ends cancelled)."""
        if self.is_cancelled():
            raise JobCancelled(self.cancel_requested or "cancelled")

    def children_values(self) -> dict[str, Any]:
        """A flow parent's completed children's results, by child job id (jobqueue.flows)."""
        return {
            c["id"]: c.get("result")
            for c in self._own_store().children(self.id, self.queue)
            if c["state"] == "completed"
        }

    def children_failures(self) -> dict[str, str]:
        """A flow parent's children that failed, were cancelled or expired (policy ignore or
        continue_parent let it run): child job id -> state and reason."""
        return {
            c["id"]: f"{c['state']}: {c.get('reason') or ''}".rstrip(": ")
            for c in self._own_store().children(self.id, self.queue)
            if c["state"] in ("failed", "cancelled", "expired", "removed")
        }

    def wait_until_finished(self, timeout: float) -> "JobRecord":
        """Block until this job is completed, failed, cancelled or expired (TimeoutError after timeout s)."""
        return self._own_store().wait_until_finished(self.id, self.queue, timeout)

    def to_fields(self) -> Mapping[str, str]:
        """The store's hash this record was read from (a fetched job travels to the pool as it)."""
        if self.raw is None:
            raise ValueError(f"job {self.id} was not read from the store")
        return self.raw


def percentiles(
    buckets: Iterable[Mapping[str, float]], prefix: str, quantiles: Iterable[float]
) -> dict[float, float | None]:
    """Quantiles (ms) of the wait ('w') or processing ('p') times recorded in per-minute
    buckets (JobStore.history), interpolated within the bucket each falls in; None without any."""
    bounds = [*MINUTE_BOUNDS_MS, None]
    counts = [0.0] * len(bounds)
    for bucket in buckets:
        for index, bound in enumerate(bounds):
            counts[index] += bucket.get(f"{prefix}{'inf' if bound is None else bound}", 0.0)
    total = sum(counts)
    out: dict[float, float | None] = {}
    for q in quantiles:
        if not total:
            out[q] = None
            continue
        rank, seen, low = q * total, 0.0, 0.0
        for bound, count in zip(bounds, counts, strict=True):
            if count and seen + count >= rank:
                high = float(bound) if bound is not None else low * 2 or 1.0
                out[q] = round(low + (high - low) * (rank - seen) / count, 3)
                break
            seen += count
            low = float(bound) if bound is not None else low
    return out


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
    """Reads and moves jobs; every state change is one atomic script call (jobqueue/scripts/*.lua)."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "jobqueue",
        sealer: Sealer | None = None,
        features: Features = DEFAULT_FEATURES,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.sealer = sealer
        self.features = features
        self.scripts = scripts.register_all(client, features)
        self.priority_step = PRIORITY_STEP
        # The queues this store holds (JobQueue registers itself): a job looked up by id
        # alone is looked for in each, and metrics() reads each queue's counters.
        self.queues: list[str] = []

    def register(self, queue: str) -> None:
        if queue not in self.queues:
            self.queues.append(queue)

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "jobqueue", sealer: Sealer | None = None, features: Features = DEFAULT_FEATURES
    ) -> "JobStore":
        # Fail fast when Redis is away: a job's bookkeeping must not outlast its timeout.
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            health_check_interval=30,
            socket_connect_timeout=2,
            socket_timeout=10,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
        return cls(client, prefix, sealer, features)

    def _seal(self, data: Any) -> str:
        return to_json(self.sealer.seal(data) if self.sealer else data)

    def _record(self, raw: Mapping[str, str]) -> JobRecord:
        record = JobRecord.from_hash(raw, strict=False)
        if self.sealer and "_unreadable" not in record.data:
            record.data = self.sealer.unseal(record.data)
        record.store = self
        return record

    def _run(self, script: str, job_id: str, queue: str, args: list[Any], client: Any = None) -> Any:
        return self.scripts[script](keys=self.keys.for_script(job_id, queue), args=args, client=client)

    # -- the life of one job (each move a row of jobqueue.lifecycle.TRANSITIONS) ----

    def create(self, record: JobRecord, score: int, *, client: Any = None, **kwargs: Any) -> tuple[str, ...]:
        """Store a new job (add, add_delayed, or hold: behind its group) and wake a worker.

        Returns ('created', id, state), ('exists', '') when that id is stored already, or
        ('deduplicated', holder) when a job of the same deduplicate key stands for it
        (JobOptions.deduplicate; holder: that job's id). With a pipeline as client, the
        answer comes from the pipeline's execute(). kwargs: as add_args takes them.
        """
        answer = self._run("add", record.id, record.queue, self.add_args(record, score, **kwargs), client=client)
        return answer if client is not None else tuple(answer)

    def add_args(
        self,
        record: JobRecord,
        score: int,
        *,
        lease_ms: int,
        priority: int = 0,
        sealed: str | None = None,
        remember_ms: int = 0,
        expires_at: int | None = None,
        group: str | None = None,
        deduplicate: Mapping[str, Any] | None = None,
        event: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """The arguments of add_job (add.lua, and scripts that create a job on the way).

        event: the move that stores it, when not add/add_delayed (wait_children: a flow's
        parent); extra: more fields of its hash (a flow's links).

        sealed: the data as the store keeps it, when the caller sealed it already. With
        remember_ms, was_added() says the id was added for that long, even once the job
        itself is removed. expires_at (ms): a job not started by then ends expired. The
        record's tags ('field:value') index it for search().
        """
        fields = {
            "id": record.id,
            "queue": record.queue,
            "name": record.name,
            "data": sealed if sealed is not None else self._seal(record.data),
            "opts": to_json(record.opts),
            "owner": record.owner or "",
            "attempts": 0,
            "createdAt": record.created_at,
            "priority": priority,
            "leaseMs": lease_ms,
            "token": 0,
        }
        tags = to_json(record.tags) if record.tags else ""
        if tags:
            fields["tags"] = tags
        if expires_at:
            fields["expiresAt"] = expires_at
        if record.trace:
            fields["trace"] = record.trace
        if extra:
            fields.update(extra)
        flat = [v for kv in fields.items() for v in kv]
        event = event or ("add" if record.state == "waiting" else "add_delayed")
        dedup = to_json(dict(deduplicate)) if deduplicate else ""
        args = [event, score, record.queue, remember_ms, expires_at or 0, tags, record.created_at, group or "", dedup]
        return [*args, *flat]

    def was_added(self, job_ids: list[str], queue: str) -> list[bool]:
        """For each id: whether its job exists, or was added with remember_ms that has not run out."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                key = self.keys.job(job_id, queue)
                pipe.exists(key, f"{key}:added")
            return [bool(n) for n in pipe.execute()]

    def get(self, job_id: str, queue: str | None = None) -> JobRecord | None:
        """The job with this id (in queue, or in any queue), or None if there is none."""
        return self.get_many([job_id], queue)[0]

    def attempts(self, job_id: str, queue: str | None = None) -> list[dict[str, Any]]:
        """The attempt log of a job (in queue, or in whichever queue has it), oldest first."""
        with self.redis.pipeline(transaction=False) as pipe:
            for name in [queue] if queue is not None else self.queues:
                pipe.lrange(f"{self.keys.job(job_id, name)}:attempts", 0, -1)
            found = next((log for log in pipe.execute() if log), [])
        return [json.loads(a) for a in found]

    def fetch(
        self,
        queue: str,
        count: int,
        worker: str,
        *,
        max_stalls: int,
        most_wait_ms: int = 5_000,
        retention: Retention = Retention(),
    ) -> tuple[int, list[JobRecord]]:
        """Take up to count jobs of queue for worker, in one round trip (fetch.lua).

        On the way it stalls the jobs whose lease ran out and promotes the delayed jobs
        that are due, and ends the pending jobs past their expiry (expired; retention: the
        retention of jobs it ends, cancelled or expired). Returns how long the caller may
        block before anything falls due
        (ms), and the jobs, each active under a lease and a new token; their data is not read
        here (the pool reads and unseals it from the hash, JobRecord.to_fields()).
        """
        fetch_id = uuid.uuid4().hex  # the same on a retry of this call: the script answers it once
        args = [now_ms(), count, worker, max_stalls, most_wait_ms, fetch_id, queue, retention.count, retention.age_ms]
        raw = self._run("fetch", "", queue, args)
        return int(raw[0]), [JobRecord.from_hash(_pairs(fields), strict=False, data=False) for fields in raw[1:]]

    def unseal(self, record: JobRecord) -> JobRecord:
        """record with its data unsealed (fetch hands jobs over sealed: the pool unseals them)."""
        if self.sealer:
            record.data = self.sealer.unseal(record.data)
        return record

    def wait_for_work(self, queues: list[str], timeout_s: float, worker: str = "") -> str | None:
        """Block until a job is added to (or falls due in) one of queues, worker is woken
        (wake_worker), or timeout_s passes."""
        keys = [self.keys.queue(queue, "wake") for queue in queues]
        if worker:
            keys.append(self.keys.worker_wake(worker))
        popped = self.redis.blpop(keys, timeout=max(timeout_s, 0.001))
        return popped[0] if popped else None

    def wake_worker(self, worker: str) -> None:
        """Wake one worker's fetcher now (its queues changed, or it is stopping)."""
        key = self.keys.worker_wake(worker)
        with self.redis.pipeline() as pipe:
            pipe.lpush(key, 1)
            pipe.expire(key, 60)
            pipe.execute()

    def renew(self, record: JobRecord, lease_ms: int) -> bool:
        """Extend an active job's lease from now; False when record's delivery no longer holds it."""
        return self._run("renew", record.id, record.queue, [now_ms(), record.token, lease_ms]) != "stale"

    def finish(
        self,
        record: JobRecord,
        event: str,
        *,
        score: int,
        retention: Retention = Retention(),
        attempt: Mapping[str, Any] | None = None,
        duration_ms: float | None = None,
        fields: Mapping[str, Any] | None = None,
        throttle_ms: int = 0,
    ) -> str | None:
        """End an active job's attempt by event (complete, fail, or retry) and trim the state it reaches.

        Fenced by record.token: raises StaleDelivery when the job is no longer held by
        this delivery (its lease was taken over, or it was finished meanwhile).
        """
        flat = [str(v) for kv in (fields or {}).items() for v in kv]
        left = self._run(
            "finish",
            record.id,
            record.queue,
            [
                throttle_ms,
                event,
                score,
                now_ms(),
                retention.count,
                retention.age_ms,
                to_json(attempt) if attempt else "",
                record.queue,
                "" if duration_ms is None else duration_ms,
                histogram_field(duration_ms or 0),
                record.token,
                *flat,
            ],
        )
        if left == "stale":
            raise StaleDelivery(f"job {record.id}: delivery {record.token} no longer holds it")
        return "active" if left == "repeat" else left

    def holds(self, record: JobRecord) -> bool:
        """Whether record's delivery still holds its job (active, with record's token)."""
        state, token = self.redis.hmget(self.keys.job(record.id, record.queue), "state", "token")
        return state == "active" and token == record.token

    def release(self, record: JobRecord, reason: str = "released") -> None:
        """Hand an active job back to waiting for another worker (release). Fenced by record.token."""
        if self._run("release", record.id, record.queue, [now_ms(), record.token, record.queue, reason]) == "stale":
            raise StaleDelivery(f"job {record.id}: delivery {record.token} no longer holds it")

    def retry(self, job_id: str, queue: str, data: Mapping[str, Any] | None = None) -> str | None:
        """An operator's retry of a failed job: 'waiting', the state it is in instead, or None."""
        return self._run("retry", job_id, queue, [now_ms(), self._seal(data) if data is not None else ""])

    def delete(self, job_id: str, queue: str) -> str | None:
        """Remove a job: 'deleted', 'active' if it is running (left alone), or None."""
        return self._run("delete", job_id, queue, [])

    def clean(self, queue: str, state: str, grace_ms: int, limit: int) -> list[str]:
        """Remove up to limit jobs in state that reached it more than grace_ms ago."""
        cutoff = now_ms() - grace_ms
        return self._run("clean", "", queue, [state, cutoff, limit])

    def cancel(self, job_id: str, queue: str, reason: str, retention: Retention = Retention()) -> str | None:
        """Cancel a job (cancel.lua): 'cancelled', 'cancelling' (it is running: asked), the
        finished state it is in, or None for an unknown job."""
        args = [now_ms(), reason, queue, retention.count, retention.age_ms]
        return self._run("cancel", job_id, queue, args)

    def defer(self, job_id: str, queue: str, until_ms: int) -> str | None:
        """Snooze a job that has not started until until_ms: 'delayed', the state it is in instead, or None."""
        return self._run("defer", job_id, queue, [until_ms])

    def update_data(self, job_id: str, queue: str, data: Mapping[str, Any]) -> str | None:
        """Replace the data of a job that is not running: its state ('active': refused), or None."""
        return self._run("update", job_id, queue, [self._seal(data)])

    def progress(self, record: JobRecord, value: Any) -> None:
        """A running job's progress; fenced by record.token (StaleDelivery)."""
        text = to_json(value)
        if len(text) > MAX_PROGRESS_CHARS:
            raise ValueError(f"progress is {len(text)} characters as JSON; at most {MAX_PROGRESS_CHARS}")
        if self._run("progress", record.id, record.queue, ["progress", record.token, text, record.attempts]) == "stale":
            raise StaleDelivery(f"job {record.id}: delivery {record.token} no longer holds it")
        record.progress = value

    def log(self, record: JobRecord, line: str) -> bool:
        """Add a line to a running job's log; False when this attempt's lines are used up. Fenced."""
        limit = self.features.log_line_chars
        text = str(line)
        entry = to_json(
            {"attempt": record.attempts, "at": now_ms(), "line": text[:limit] + ("…" if len(text) > limit else "")}
        )
        kept = self._run("progress", record.id, record.queue, ["log", record.token, entry, record.attempts])
        if kept == "stale":
            raise StaleDelivery(f"job {record.id}: delivery {record.token} no longer holds it")
        return bool(kept)

    def children(self, job_id: str, queue: str) -> list[dict[str, Any]]:
        """A flow parent's children: queue, id, and the state and result or reason of those that
        ended (as recorded when they ended), else their state now (jobqueue.flows)."""
        key = self.keys.job(job_id, queue)
        listed = self.redis.hkeys(f"{key}:children")
        ended = self.redis.hgetall(f"{key}:results")
        out: list[dict[str, Any]] = []
        for child in sorted(listed):
            child_queue, child_id = child.split("|", 1)
            if child in ended:
                entry = json.loads(ended[child])
                result = entry.get("result")
                reason = entry.get("reason")
                out.append(
                    {
                        "queue": child_queue,
                        "id": child_id,
                        "state": entry["state"],
                        "result": json.loads(result) if isinstance(result, str) and result else None,
                        "reason": reason if isinstance(reason, str) else None,
                        "policy": entry.get("policy") or "fail_parent",
                    }
                )
            else:
                found = self.get(child_id, child_queue)
                out.append({"queue": child_queue, "id": child_id, "state": found.state if found else "removed"})
        return out

    def logs(self, job_id: str, queue: str) -> list[dict[str, Any]]:
        """A job's log lines, oldest first: {attempt, at, line}."""
        return [json.loads(entry) for entry in self.redis.lrange(f"{self.keys.job(job_id, queue)}:logs", 0, -1)]

    # -- events ----------------------------------------------------------------

    def last_event_id(self, queue: str) -> str:
        """The id of the queue's newest event ('0-0' when there is none): read events after it."""
        newest = self.redis.xrevrange(self.keys.queue(queue, "events"), count=1)
        return newest[0][0] if newest else "0-0"

    def read_events(
        self, after: Mapping[str, str], block_ms: int | None = None, count: int = 500
    ) -> list[tuple[str, str, dict[str, str]]]:
        """Events of queues after the given ids ({queue: last id}), blocking up to block_ms
        for the first (None: do not block). Returns (queue, event id, fields) in order."""
        streams = {self.keys.queue(queue, "events"): last for queue, last in after.items()}
        by_key = {self.keys.queue(queue, "events"): queue for queue in after}
        found = self.redis.xread(streams, count=count, block=block_ms)
        return [(by_key[key], event_id, fields) for key, entries in found or [] for event_id, fields in entries]

    def wait_until_finished(self, job_id: str, queue: str, timeout: float) -> JobRecord:
        """Block until the job is completed, failed, cancelled or expired; TimeoutError after timeout s.

        Reads the queue's event stream (XREAD BLOCK), no polling loop; LookupError if the job is removed.
        """
        deadline = time.monotonic() + timeout
        after = self.last_event_id(queue)  # first the stream's position, then the state: no event is missed
        while True:
            job = self.get(job_id, queue)
            if job is None:
                raise LookupError(f"job {job_id} not found")
            if job.state in FINISHED:
                return job
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout:g} s")
            while left_ms > 0:
                events = self.read_events({queue: after}, block_ms=min(left_ms, 5_000))
                if events:
                    after = events[-1][1]
                    if any(fields.get("id") == job_id for _, _, fields in events):
                        break
                left_ms = int((deadline - time.monotonic()) * 1000)

    # -- search ------------------------------------------------------------------

    def search(
        self,
        queue: str,
        *,
        tags: Iterable[str] = (),
        state: str | None = None,
        name: str | None = None,
        since: int | None = None,
        until: int | None = None,
        cursor: tuple[int, str] | None = None,
        limit: int = 50,
        budget: int = 5_000,
    ) -> tuple[list[tuple[int, str]], tuple[int, str] | None]:
        """Job ids of one queue matching every filter, newest first (by creation), from the
        search indexes (search.lua), never a scan of the store.

        tags: 'field:value' the job was tagged with ('owner:u1', 'rideId:123'), all required.
        The smallest index leads; the rest are checked per candidate. At most budget
        candidates are looked at per call. Returns ([(created_at, id)...], cursor): cursor
        is where to go on ((created_at, id) of the last looked at), or None at the end.
        """
        args = [
            to_json(list(tags)),
            state or "",
            name or "",
            "-inf" if since is None else since,
            "+inf" if until is None else until,
            "" if cursor is None else cursor[0],
            "" if cursor is None else cursor[1],
            limit,
            budget,
        ]
        raw = self._run("search", "", queue, args)
        found = [(int(raw[i + 1]), raw[i]) for i in range(1, len(raw), 2)]
        nxt = raw[0]
        if not nxt:
            return found, None
        score, _, last = nxt.partition(":")
        return found, (int(score), last)

    # -- history (per-minute buckets) ---------------------------------------------

    def history(self, queue: str, minutes: int = 60, end_ms: int | None = None) -> list[dict[str, float]]:
        """The queue's per-minute buckets, oldest first, over the last minutes (at most 72 h):
        each {minute (epoch ms of its start), added, completed, failed, cancelled, expired,
        retried, snoozed, and the wait ('w<bound>') and processing ('p<bound>') histograms}."""
        minutes = max(1, min(minutes, 72 * 60))
        last = (end_ms or now_ms()) // 60_000
        first = last - minutes + 1
        with self.redis.pipeline(transaction=False) as pipe:
            for minute in range(first, last + 1):
                pipe.hgetall(self.keys.queue(queue, f"m:{minute}"))
            buckets = pipe.execute()
        return [
            {"minute": minute * 60_000, **{k: float(v) for k, v in bucket.items()}}
            for minute, bucket in zip(range(first, last + 1), buckets, strict=True)
        ]

    def oldest_waiting_ms(self, queue: str) -> int | None:
        """How long the queue's oldest waiting job has been waiting (ms), or None when none waits."""
        key = self.keys.queue(queue, "waiting")
        top = self.redis.zrange(key, -1, -1, withscores=True)
        if not top:
            return None
        bands = int(top[0][1] // PRIORITY_STEP)
        with self.redis.pipeline(transaction=False) as pipe:
            for band in range(bands + 1):
                base = band * PRIORITY_STEP
                pipe.zrangebyscore(key, base, base + PRIORITY_STEP - 1, start=0, num=1, withscores=True)
            firsts = [entries[0][1] % PRIORITY_STEP for entries in pipe.execute() if entries]
        return max(0, now_ms() - int(min(firsts))) if firsts else None

    # -- queues ----------------------------------------------------------------

    def counts(self, queue: str) -> dict[str, int]:
        """Jobs per state in one queue: a ZCARD per state, no scan.

        While the queue is paused its waiting jobs are counted as paused, as in BullMQ.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            for state in STATES:
                pipe.zcard(self.keys.queue(queue, state))
            pipe.exists(self.keys.queue(queue, "paused"))
            *sizes, paused = pipe.execute()
        counts = dict(zip(STATES, sizes, strict=True))
        counts["paused"] = counts["waiting"] if paused else 0
        if paused:
            counts["waiting"] = 0
        return counts

    def is_paused(self, queue: str) -> bool:
        return bool(self.redis.exists(self.keys.queue(queue, "paused")))

    def paused_queues(self, queues: Iterable[str]) -> set[str]:
        """Which of queues are paused, in one round trip."""
        names = list(queues)
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(self.keys.queue(name, "paused"))
            return {name for name, flag in zip(names, pipe.execute(), strict=True) if flag}

    def set_paused(self, queue: str, paused: bool) -> None:
        key = self.keys.queue(queue, "paused")
        if paused:
            self.redis.set(key, now_ms())
        else:
            with self.redis.pipeline() as pipe:
                pipe.delete(key)
                pipe.lpush(self.keys.queue(queue, "wake"), 1)  # idle workers take its jobs at once
                pipe.execute()

    def list_jobs(self, queue: str, states: Iterable[str], *, offset: int = 0, limit: int = 50) -> list[JobRecord]:
        """Jobs of the given states, newest first (by the time they entered the state)."""
        entries: list[tuple[float, str]] = []
        with self.redis.pipeline(transaction=False) as pipe:
            for state in states:
                pipe.zrevrange(self.keys.queue(queue, state), 0, offset + limit - 1, withscores=True)
            for batch in pipe.execute():
                # A waiting job's score carries its priority above the time it became waiting.
                entries.extend((score % PRIORITY_STEP, job_id) for job_id, score in batch)
        entries.sort(reverse=True)
        page = [job_id for _, job_id in entries[offset : offset + limit]]
        return [job for job in self.get_many(page, queue) if job is not None]

    def ids_in_state(self, queue: str, state: str, limit: int = 10_000) -> list[str]:
        """Ids of up to limit jobs in one state, oldest first."""
        return self.redis.zrange(self.keys.queue(queue, state), 0, limit - 1)

    def get_many(self, job_ids: Iterable[str], queue: str | None = None) -> list[JobRecord | None]:
        """The jobs with these ids (None where there is none), in one round trip.

        Without queue, each id is looked for in every queue's slot (one HGETALL each).
        """
        ids = list(job_ids)
        queues = [queue] if queue is not None else self.queues
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                for name in queues:
                    pipe.hgetall(self.keys.job(job_id, name))
            raws = pipe.execute()
        found: list[JobRecord | None] = []
        for index in range(len(ids)):
            raw = next((r for r in raws[index * len(queues) : (index + 1) * len(queues)] if r), None)
            found.append(self._record(raw) if raw else None)
        return found

    def activity(self, queue: str) -> QueueActivity:
        """Completed and failed jobs in the last minute and hour, from the per-minute buckets
        (the oldest bucket of each window counted for the share of it inside the window);
        mean and p95 of recent jobs."""
        now = now_ms()
        buckets = self.history(queue, 61, end_ms=now)
        inside = 1 - (now % 60_000) / 60_000  # the share of the oldest bucket within the window
        durations = self.redis.lrange(self.keys.queue(queue, "durations"), 0, -1)
        sums: dict[str, tuple[int, int]] = {}
        for state in ("completed", "failed"):
            counts = [b.get(state, 0.0) for b in buckets]
            sums[state] = (round(counts[-1] + counts[-2] * inside), round(sum(counts[1:]) + counts[0] * inside))
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
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.hgetall(self.keys.queue(queue, "metrics"))
            return {k: int(v) for counters in pipe.execute() for k, v in counters.items()}

    def histogram(self, queue: str) -> dict[str, float]:
        """Processing-time histogram buckets of one queue (not cumulative), with sum and count."""
        return {k: float(v) for k, v in self.redis.hgetall(self.keys.queue(queue, "hist")).items()}

    # -- workers ---------------------------------------------------------------

    def heartbeat(self, worker: str, info: Mapping[str, Any]) -> None:
        """Record that worker is alive and which queues it consumes."""
        self.redis.hset(self.keys.workers, worker, to_json({**info, "lastSeen": now_ms()}))

    def workers(self) -> dict[str, dict[str, Any]]:
        """Workers seen in the last 30 s, with their queues; stale entries are dropped."""
        raw = self.redis.hgetall(self.keys.workers)
        alive, stale = {}, []
        for name, value in raw.items():
            info = json.loads(value)
            if now_ms() - info.get("lastSeen", 0) <= WORKER_TTL_MS:
                alive[name] = info
            else:
                stale.append(name)
        if stale:
            self.redis.hdel(self.keys.workers, *stale)
        return alive

    def forget_worker(self, worker: str) -> None:
        self.redis.hdel(self.keys.workers, worker)
