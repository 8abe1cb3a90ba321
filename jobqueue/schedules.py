"""Schedules: recurring jobs, one job per tick however many schedulers run.

A schedule says when it ticks (``every_ms``, at fixed multiples of it since the epoch;
or a 5-field ``cron`` expression in a time zone, whose ticks follow that zone's
daylight-saving changes) and what job each tick makes (its queue, data and options).
It lives in its queue's slot of the job store:

- ``<tag>:sched:<id>``: a hash: the spec, the job, ``next`` (the next tick, ms),
  ``rev`` (bumped by every edit, pause and resume), ``paused``, the last tick, the
  last job ids, the missed-tick policy;
- ``<tag>:schedules``: a sorted set, id -> next tick (absent while paused): what is due;
- ``<tag>:sched:<id>:history``: the last HISTORY_LENGTH ticks, newest first: tick,
  job id, fired / skipped / invalid;
- ``{<prefix>}:schedules``: a hash id -> queue, only to find a schedule by id.

A scheduler (``Scheduler.poll``, every POLL_INTERVAL_S in each worker's housekeeping,
or in ``flask jobs scheduler``) reads the due ones, works out the tick to fire and the
tick after it, and calls schedule.lua, which fires only if ``next`` and ``rev`` are
still what it read (compare-and-set), so among any number of schedulers one fires
each tick and the others change nothing. The job's id is ``sched:<id>:<tick ms>``
and add_job refuses an id stored already, so a call retried after a lost reply
makes no second job either.

Missed ticks: a tick is *missed* when the tick after it is due as well (every
scheduler was down meanwhile). ``missed="run_once"`` (the default) fires one job,
for the latest due tick; ``missed="skip"`` fires none. Either way the schedule goes
on from the next tick in the future, and each tick not fired is in the history as
skipped. A tick that is late but not missed (the next one is not due yet) fires.
"""

import json
import logging
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from redis.exceptions import RedisError, WatchError

from jobqueue.errors import InvalidJobData, QueueUnavailable
from jobqueue.options import InvalidJobOptions
from jobqueue.store import to_json

if TYPE_CHECKING:
    from jobqueue.queue import JobQueue, JobService

log = logging.getLogger("jobqueue")

MISSED_POLICIES = ("run_once", "skip")
# A scheduler polls this often: a tick fires within about this long of its time.
POLL_INTERVAL_S = 0.5
# every_ms is at least this (a faster schedule would tick between two polls) and at most a year.
MIN_EVERY_MS = 1_000
MAX_EVERY_MS = 366 * 24 * 3_600_000
HISTORY_LENGTH = 100
LAST_JOB_IDS = 5
# The job id is 'sched:<id>:<tick ms>', within the store's 64 characters.
SCHEDULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
JOB_ID_PREFIX = "sched:"
# Due schedules one poll fires per queue at most (the rest the next poll).
POLL_BATCH = 100


class InvalidSchedule(InvalidJobOptions):
    """A schedule that cannot be used; .errors maps each bad field to its message."""


class ScheduleNotFound(LookupError):
    """No schedule has this id."""


def check_schedule_id(schedule_id: Any) -> str:
    if not (isinstance(schedule_id, str) and SCHEDULE_ID.fullmatch(schedule_id)):
        raise InvalidSchedule(
            {"id": "must be 1 to 40 letters, digits, '_', '.' or '-', starting with a letter or digit"}
        )
    return schedule_id


@dataclass(frozen=True)
class Spec:
    """When a schedule ticks: every every_ms (at its multiples since the epoch), or at a cron
    expression's times in a time zone."""

    every_ms: int | None = None
    cron: str | None = None
    tz: str = "UTC"

    @classmethod
    def parse(cls, every_ms: Any = None, cron: Any = None, tz: Any = None) -> "Spec":
        """A checked spec; InvalidSchedule naming each bad field."""
        errors: dict[str, str] = {}
        if (every_ms is None) == (cron is None):
            errors["everyMs" if every_ms is not None else "cron"] = "give either everyMs or cron, not both"
        if every_ms is not None and not (
            isinstance(every_ms, int) and not isinstance(every_ms, bool) and MIN_EVERY_MS <= every_ms <= MAX_EVERY_MS
        ):
            errors["everyMs"] = f"must be a whole number of ms from {MIN_EVERY_MS} to {MAX_EVERY_MS}"
        if cron is not None and not (isinstance(cron, str) and len(cron.split()) == 5 and croniter.is_valid(cron)):
            errors["cron"] = "must be a cron expression of 5 fields: minute hour day-of-month month day-of-week"
        if tz is not None and every_ms is not None and cron is None:
            errors["tz"] = "a time zone goes with cron only"
        zone = "UTC" if tz is None else tz
        try:
            if not isinstance(zone, str) or not zone:
                raise ValueError(zone)
            ZoneInfo(zone)
        except (ValueError, ZoneInfoNotFoundError):
            errors["tz"] = "must be an IANA time zone, such as Europe/Paris or UTC"
        if errors:
            raise InvalidSchedule(errors)
        return cls(every_ms=every_ms, cron=" ".join(cron.split()) if cron else None, tz=zone if cron else "UTC")

    def to_dict(self) -> dict[str, Any]:
        if self.every_ms is not None:
            return {"everyMs": self.every_ms}
        return {"cron": self.cron, "tz": self.tz}

    def __str__(self) -> str:
        return f"every {self.every_ms} ms" if self.every_ms is not None else f"{self.cron} ({self.tz})"

    # -- ticks (ms since the epoch) -----------------------------------------------------

    def next_after(self, ms: int) -> int:
        """The first tick strictly after ms."""
        if self.every_ms is not None:
            return (ms // self.every_ms + 1) * self.every_ms
        zone = ZoneInfo(self.tz)
        ticks = croniter(self.cron, datetime.fromtimestamp(ms / 1000, zone))
        while True:
            moment = ticks.get_next(datetime)
            if not self._repeated(moment, zone):
                return int(moment.timestamp() * 1000)

    def latest_at_or_before(self, ms: int) -> int:
        """The last tick at or before ms."""
        if self.every_ms is not None:
            return ms // self.every_ms * self.every_ms
        zone = ZoneInfo(self.tz)
        ticks = croniter(self.cron, datetime.fromtimestamp((ms + 1) / 1000, zone))
        while True:
            moment = ticks.get_prev(datetime)
            if not self._repeated(moment, zone):
                return int(moment.timestamp() * 1000)

    def _repeated(self, moment: datetime, zone: ZoneInfo) -> bool:
        """Whether moment is the second time its wall-clock time is read (the hour a fall-back
        repeats) in an expression that names its hours: such a tick fires once, the first time,
        as Vixie cron does; an expression for every hour ('*') runs by the clock through both."""
        if self.cron is None or self.cron.split()[1].startswith("*"):
            return False
        wall = moment.replace(tzinfo=None)
        first = wall.replace(tzinfo=zone, fold=0)
        return first.timestamp() < moment.timestamp()


@dataclass(frozen=True)
class Plan:
    """What one scheduler does with a due schedule: fire tick (or none), then wait for next."""

    tick: int | None  # the tick to fire, None: fire none
    next: int  # the schedule's next tick afterwards (in the future)
    skipped: list[int] = field(default_factory=list)  # missed ticks not fired (at most HISTORY_LENGTH)


def plan(spec: Spec, due: int, now: int, missed: str) -> Plan:
    """The tick to fire for a schedule whose next tick, due, is at or before now.

    On time (the tick after due is still in the future): fire due. Otherwise every tick
    from due to the latest at or before now is due: run_once fires the latest, skip fires
    none; both go on from the first tick after now.
    """
    after = spec.next_after(due)
    if after > now:
        return Plan(due, after)
    latest = spec.latest_at_or_before(now)
    following = spec.next_after(latest)
    missed_ticks = [due]
    while len(missed_ticks) < HISTORY_LENGTH and missed_ticks[-1] < latest:
        missed_ticks.append(spec.next_after(missed_ticks[-1]))
    missed_ticks = [t for t in missed_ticks if t < latest]
    if missed == "skip":
        return Plan(None, following, [*missed_ticks, latest][-HISTORY_LENGTH:])
    return Plan(latest, following, missed_ticks[-HISTORY_LENGTH:])


def job_id_for(schedule_id: str, tick: int) -> str:
    """The id of the job a schedule's tick makes: the same for every scheduler."""
    return f"{JOB_ID_PREFIX}{schedule_id}:{tick}"


def tick_of(job_id: str) -> int | None:
    """The tick (ms) a schedule's job was made for, read from its id; None for any other job."""
    if not job_id.startswith(JOB_ID_PREFIX):
        return None
    _, _, tick = job_id.rpartition(":")
    return int(tick) if tick.isdigit() else None


@dataclass
class Schedule:
    """One schedule as the store holds it."""

    id: str
    queue: str
    spec: Spec
    name: str
    data: dict[str, Any]
    options: dict[str, Any]
    missed: str
    next: int
    rev: int
    paused: bool
    last_tick: int | None = None
    last_run_at: int | None = None
    last_job_ids: list[str] = field(default_factory=list)
    last_error: str | None = None
    fired: int = 0
    created_at: int = 0
    updated_at: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # newest first

    def to_dict(self) -> dict[str, Any]:
        """The schedule as the admin API shows it (data not masked: the caller masks it)."""
        return {
            "id": self.id,
            **self.spec.to_dict(),
            "job": {"queue": self.queue, "name": self.name, "data": self.data, "options": self.options},
            "missed": self.missed,
            "paused": self.paused,
            "nextRunAt": None if self.paused else self.next,
            "lastTick": self.last_tick,
            "lastRunAt": self.last_run_at,
            "lastJobIds": self.last_job_ids,
            "lastError": self.last_error,
            "fired": self.fired,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "history": self.history,
        }


def _opt_int(raw: Mapping[str, str], name: str) -> int | None:
    return int(raw[name]) if raw.get(name) else None


class Schedules:
    """The schedules of one job service: upsert, remove, pause, resume, get, list, and fire()."""

    def __init__(self, service: "JobService") -> None:
        self.service = service
        self.store = service.store
        self.redis = service.store.redis
        self.index = f"{{{self.store.prefix}}}:schedules"

    # -- keys ---------------------------------------------------------------------------

    def key(self, schedule_id: str, queue: str) -> str:
        return self.store.keys.queue(queue, f"sched:{schedule_id}")

    def due_key(self, queue: str) -> str:
        return self.store.keys.queue(queue, "schedules")

    def server_ms(self) -> int:
        """Redis's clock (ms): every scheduler and every edit reads one clock."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # -- changes ------------------------------------------------------------------------

    def check_job(self, job: Any) -> tuple["JobQueue", str, dict[str, Any], dict[str, Any]]:
        """The job a schedule makes, checked as an add checks it (JobQueue.prepare): its queue,
        task name, data and options. Raises InvalidSchedule / InvalidJobData / InvalidJobOptions."""
        if not isinstance(job, Mapping):
            raise InvalidSchedule({"job": "must be an object: {queue, name, data, options}"})
        unknown = sorted(set(job) - {"queue", "name", "data", "options"})
        if unknown:
            raise InvalidSchedule({f"job.{unknown[0]}": "unknown field; a job has queue, name, data and options"})
        queue = self.service.queues.get(job.get("queue"))  # type: ignore[arg-type]
        if queue is None:
            raise InvalidSchedule({"job.queue": f"must be one of {', '.join(self.service.queues)}"})
        errors: dict[str, Any] = {}
        name = job.get("name") or queue.task_name
        if name != queue.task_name:
            errors["job.name"] = f"queue {queue.name} runs {queue.task_name} jobs"
        data, options = job.get("data") or {}, job.get("options") or {}
        if not isinstance(options, Mapping):
            errors["job.options"] = "must be an object"
        elif "job_id" in options or "jobId" in options:
            errors["job.options"] = "a scheduled job's id is sched:<id>:<tick>; give none"
        try:
            if not isinstance(data, Mapping):
                raise InvalidJobData({"_data": ["must be an object"]})
            # What every tick will do, once now: InvalidJobData / InvalidJobOptions name the fields.
            if "job.options" not in errors:
                queue.prepare(data, job_id=job_id_for("x", 0), **self._job_options(options, "x"))
        except (InvalidJobData, InvalidJobOptions) as exc:
            if not errors:
                raise  # the job alone is refused: as an add refuses it
            errors["job.data" if isinstance(exc, InvalidJobData) else "job.options"] = exc.errors
        if errors:
            raise InvalidSchedule(errors)
        return queue, name, dict(data), dict(options)

    @staticmethod
    def _job_options(options: Mapping[str, Any], schedule_id: str) -> dict[str, Any]:
        """The options of a tick's job: the schedule's, tagged schedule:<id> for search."""
        tags = options.get("tags")
        extra: Any = {"schedule": schedule_id}
        if isinstance(tags, Mapping):
            extra = {**tags, **extra}
        elif isinstance(tags, list | tuple):
            extra = [*tags, f"schedule:{schedule_id}"]
        return {**options, "tags": extra}

    def upsert(
        self,
        schedule_id: str,
        *,
        every_ms: int | None = None,
        cron: str | None = None,
        tz: str | None = None,
        job: Mapping[str, Any],
        missed: str = "run_once",
    ) -> Schedule:
        """Create a schedule or replace one (its spec, job and missed policy), at run time.

        A new spec starts from its first tick after now; an unchanged spec keeps its next
        tick. A paused schedule stays paused. The job is checked as an add checks it.
        """
        check_schedule_id(schedule_id)
        errors: dict[str, Any] = {}
        spec: Spec | None = None
        try:
            spec = Spec.parse(every_ms, cron, tz)
        except InvalidSchedule as exc:
            errors |= exc.errors
        if missed not in MISSED_POLICIES:
            errors["missed"] = f"must be one of {', '.join(MISSED_POLICIES)}"
        try:
            queue, name, data, options = self.check_job(job)
        except InvalidSchedule as exc:
            errors |= exc.errors
        except (InvalidJobData, InvalidJobOptions) as exc:
            if not errors:
                raise  # the job alone is refused: as an add refuses it
            errors["job.data" if isinstance(exc, InvalidJobData) else "job.options"] = exc.errors
        if errors:
            raise InvalidSchedule(errors)  # every refusal at once; job.data / job.options nested
        assert spec is not None
        old_queue = self.redis.hget(self.index, schedule_id)
        if old_queue and old_queue != queue.name:
            self._move(schedule_id, old_queue, queue.name)
        key = self.key(schedule_id, queue.name)
        sealed = to_json(self.store.sealer.seal(data) if self.store.sealer else data)
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    old = pipe.hgetall(key)
                    now = self.server_ms()
                    same_spec = bool(old) and old.get("spec") == to_json(spec.to_dict())
                    nxt = int(old["next"]) if same_spec else spec.next_after(now)
                    paused = old.get("paused") == "1"
                    pipe.multi()
                    pipe.hset(
                        key,
                        mapping={
                            "id": schedule_id,
                            "queue": queue.name,
                            "spec": to_json(spec.to_dict()),
                            "name": name,
                            "data": sealed,
                            "options": to_json(options),
                            "missed": missed,
                            "next": nxt,
                            "paused": "1" if paused else "0",
                            "createdAt": old.get("createdAt") or now,
                            "updatedAt": now,
                        },
                    )
                    pipe.hincrby(key, "rev", 1)
                    if not paused:
                        pipe.zadd(self.due_key(queue.name), {schedule_id: nxt})
                    pipe.execute()
                    break
                except WatchError:
                    continue
        self.redis.hset(self.index, schedule_id, queue.name)
        found = self.get(schedule_id)
        assert found is not None
        return found

    def _move(self, schedule_id: str, old_queue: str, new_queue: str) -> None:
        """A schedule whose job changes queue moves to the new queue's slot, with its history.

        First no scheduler may fire it in the old slot (rev bumped, out of the due set), so a
        tick is never fired there and again from the copy."""
        old_key, new_key = self.key(schedule_id, old_queue), self.key(schedule_id, new_queue)
        with self.redis.pipeline() as pipe:
            pipe.hincrby(old_key, "rev", 1)
            pipe.zrem(self.due_key(old_queue), schedule_id)
            pipe.execute()
        fields = self.redis.hgetall(old_key)
        history = self.redis.lrange(f"{old_key}:history", 0, -1)
        with self.redis.pipeline() as pipe:
            pipe.delete(new_key, f"{new_key}:history")
            if fields:
                pipe.hset(new_key, mapping={**fields, "queue": new_queue})
            if history:
                pipe.rpush(f"{new_key}:history", *history)
            pipe.execute()
        with self.redis.pipeline() as pipe:
            pipe.delete(old_key, f"{old_key}:history")
            pipe.zrem(self.due_key(old_queue), schedule_id)
            pipe.execute()

    def remove(self, schedule_id: str) -> Schedule:
        """Delete a schedule and its history (the jobs it made stay); ScheduleNotFound."""
        found = self.get(schedule_id)
        if found is None:
            raise ScheduleNotFound(schedule_id)
        key = self.key(schedule_id, found.queue)
        with self.redis.pipeline() as pipe:
            pipe.delete(key, f"{key}:history")
            pipe.zrem(self.due_key(found.queue), schedule_id)
            pipe.execute()
        self.redis.hdel(self.index, schedule_id)
        return found

    def set_paused(self, schedule_id: str, paused: bool) -> Schedule:
        """Pause (no tick fires, not even one in flight: rev changes) or resume (from the first
        tick after now: ticks of the pause are not made up). ScheduleNotFound."""
        queue = self.redis.hget(self.index, schedule_id)
        if not queue:
            raise ScheduleNotFound(schedule_id)
        key = self.key(schedule_id, queue)
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.hgetall(key)
                    if not raw:
                        raise ScheduleNotFound(schedule_id)
                    pipe.multi()
                    if paused:
                        pipe.hset(key, mapping={"paused": "1", "updatedAt": self.server_ms()})
                        pipe.zrem(self.due_key(queue), schedule_id)
                    elif raw.get("paused") == "1":
                        now = self.server_ms()
                        nxt = self._spec(raw).next_after(now)
                        pipe.hset(key, mapping={"paused": "0", "next": nxt, "updatedAt": now})
                        pipe.zadd(self.due_key(queue), {schedule_id: nxt})
                    pipe.hincrby(key, "rev", 1)
                    pipe.execute()
                    break
                except WatchError:
                    continue
        found = self.get(schedule_id)
        assert found is not None
        return found

    # -- reading ------------------------------------------------------------------------

    @staticmethod
    def _spec(raw: Mapping[str, str]) -> Spec:
        spec = json.loads(raw["spec"])
        return Spec(every_ms=spec.get("everyMs"), cron=spec.get("cron"), tz=spec.get("tz") or "UTC")

    def _schedule(self, raw: Mapping[str, str], history: list[str] | None = None) -> Schedule:
        data = json.loads(raw.get("data") or "{}")
        if self.store.sealer:
            data = self.store.sealer.unseal(data)
        return Schedule(
            id=raw["id"],
            queue=raw["queue"],
            spec=self._spec(raw),
            name=raw.get("name", ""),
            data=data,
            options=json.loads(raw.get("options") or "{}"),
            missed=raw.get("missed") or "run_once",
            next=int(raw["next"]),
            rev=int(raw.get("rev") or 0),
            paused=raw.get("paused") == "1",
            last_tick=_opt_int(raw, "lastTick"),
            last_run_at=_opt_int(raw, "lastRunAt"),
            last_job_ids=json.loads(raw.get("lastJobIds") or "[]"),
            last_error=raw.get("lastError") or None,
            fired=int(raw.get("fired") or 0),
            created_at=int(raw.get("createdAt") or 0),
            updated_at=int(raw.get("updatedAt") or 0),
            history=[json.loads(entry) for entry in history or []],
        )

    def get(self, schedule_id: str) -> Schedule | None:
        """One schedule with its history, or None."""
        queue = self.redis.hget(self.index, schedule_id)
        if not queue:
            return None
        key = self.key(schedule_id, queue)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.lrange(f"{key}:history", 0, -1)
            raw, history = pipe.execute()
        return self._schedule(raw, history) if raw else None

    def list_all(self, history: bool = True) -> list[Schedule]:
        """Every schedule, by id, with its history (newest first) unless history=False."""
        index = self.redis.hgetall(self.index)
        ids = sorted(index)
        with self.redis.pipeline(transaction=False) as pipe:
            for schedule_id in ids:
                key = self.key(schedule_id, index[schedule_id])
                pipe.hgetall(key)
                if history:
                    pipe.lrange(f"{key}:history", 0, -1)
            answers = pipe.execute()
        step = 2 if history else 1
        found = []
        for i in range(len(ids)):
            raw = answers[step * i]
            if raw:
                found.append(self._schedule(raw, answers[step * i + 1] if history else []))
        return found

    # -- firing ---------------------------------------------------------------------------

    def due(self, now: int) -> list[tuple[str, str]]:
        """(queue, schedule id) of every schedule whose next tick is at or before now."""
        queues = list(self.service.queues)
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zrangebyscore(self.due_key(queue), "-inf", now, start=0, num=POLL_BATCH)
            answers = pipe.execute()
        return [(queue, schedule_id) for queue, ids in zip(queues, answers, strict=True) for schedule_id in ids]

    def fire(self, queue_name: str, schedule_id: str, now: int) -> tuple[str, ...]:
        """Fire a due schedule's tick, if no other scheduler did (schedule.lua's compare-and-set).

        Returns ('fired', job id, 'created' | 'exists' | 'deduplicated'), ('advanced',): no job
        (missed ticks skipped, or the job is no longer valid), ('stale',): another scheduler or
        an operator got there first, or ('not_due',).
        """
        key = self.key(schedule_id, queue_name)
        raw = self.redis.hgetall(key)
        if not raw:
            self.redis.zrem(self.due_key(queue_name), schedule_id)  # removed meanwhile
            return ("stale",)
        if raw.get("paused") == "1":
            return ("stale",)
        schedule = self._schedule(raw)
        if schedule.next > now:
            return ("not_due",)
        step = plan(schedule.spec, schedule.next, now, schedule.missed)
        queue = self.service.queues[queue_name]
        add_args: list[Any] = []
        error = ""
        job_id = job_id_for(schedule_id, step.tick if step.tick is not None else schedule.next)
        if step.tick is not None:
            try:
                prepared = queue.prepare(
                    schedule.data, job_id=job_id, **self._job_options(schedule.options, schedule_id)
                )
                if queue.admission is not None:
                    queue.admission()
                add_args = queue.add_args(prepared)
            except QueueUnavailable as exc:
                # No room in the store now: the tick stays due, and the next poll tries again.
                log.warning("schedule.held", extra={"schedule": schedule_id, "queue": queue_name, "error": str(exc)})
                return ("stale",)
            except (InvalidJobData, InvalidJobOptions, ValueError) as exc:
                # The job no longer suits its queue (its schema changed): the tick is recorded
                # as invalid and the schedule goes on; an operator's edit puts it right.
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.error("schedule.invalid_job", extra={"schedule": schedule_id, "queue": queue_name, "error": error})
        skipped = step.skipped
        args = [
            schedule_id,
            raw["next"],
            raw.get("rev") or "0",
            step.next,
            step.tick if add_args else "",
            now,
            to_json(skipped),
            step.tick if error else "",
            error,
            HISTORY_LENGTH,
            LAST_JOB_IDS,
            *add_args,
        ]
        answer = self.store.scripts["schedule"](keys=self.store.keys.for_script(job_id, queue_name), args=args)
        answer = tuple(answer)
        if answer[0] == "fired":
            log.info(
                "schedule.fired",
                extra={"schedule": schedule_id, "queue": queue_name, "job_id": answer[1], "tick": step.tick},
            )
        if skipped and answer[0] != "stale":
            log.warning(
                "schedule.missed",
                extra={
                    "schedule": schedule_id,
                    "queue": queue_name,
                    "skipped": len(skipped),
                    "policy": schedule.missed,
                },
            )
        return answer


class Scheduler:
    """Fires due schedules of a job service, polling every POLL_INTERVAL_S; any number may run."""

    def __init__(self, service: "JobService", interval_s: float = POLL_INTERVAL_S) -> None:
        self.schedules = Schedules(service)
        self.service = service
        self.interval_s = interval_s

    def poll(self) -> int:
        """One round: fire every due schedule; how many jobs this scheduler made."""
        now = self.schedules.server_ms()
        due = self.schedules.due(now)
        made = 0
        if not due:
            return 0
        with self.service.context():
            for queue, schedule_id in due:
                try:
                    answer = self.schedules.fire(queue, schedule_id, now)
                except RedisError:
                    raise
                except Exception:  # noqa: BLE001 - one bad schedule must not stop the others
                    log.exception("schedule.crashed", extra={"schedule": schedule_id, "queue": queue})
                    continue
                made += answer[0] == "fired" and answer[2] == "created"
        return made

    def run(self, stopped: threading.Event) -> None:
        """Poll until stopped is set; the store being away is waited out."""
        pause = self.interval_s
        while not stopped.is_set():
            started = time.monotonic()
            try:
                self.poll()
                pause = self.interval_s
            except RedisError as exc:
                log.warning("scheduler.failed", extra={"error": str(exc), "retry_in_s": pause})
                pause = min(pause * 2, 5.0)
            except Exception:  # noqa: BLE001 - the scheduler must outlive any one bad round
                log.exception("scheduler.crashed")
            # A little jitter: schedulers started together drift apart rather than poll in step.
            stopped.wait(max(0.0, pause * random.uniform(0.8, 1.2) - (time.monotonic() - started)))
