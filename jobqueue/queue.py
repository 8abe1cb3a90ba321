"""The queue API: add, add_bulk, get_job, get_job_counts, retry, delete, clean, pause, in BullMQ's vocabulary.

The job store is the only queue. Adding a job is one script that stores it and
wakes a worker; a worker takes jobs with one script (fetch.lua) that picks them
by priority and order, leases them under a fencing token and returns them
whole. There is no broker message per job, so there is nothing to reconcile.

Every job passes one preparation step (``JobQueue.prepare``: options,
validation, id, sealing) whichever way it comes in (add, add_bulk, the
outbox), and one admission check (memory and eviction, ``JobService.admission``).
"""

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from redis.exceptions import RedisError

from jobqueue import tracing
from jobqueue.errors import CancelRefused, InvalidJobData, QueueUnavailable
from jobqueue.flows import FlowJob, Flows
from jobqueue.lifecycle import FINISHED
from jobqueue.limits import FlowControl
from jobqueue.options import InvalidJobOptions, JobOptions, resolve_options
from jobqueue.policy import QueuePolicy
from jobqueue.store import JobRecord, JobStore, Retention, now_ms, to_json

log = logging.getLogger("jobqueue")

Job = JobRecord

# Seconds between a job's timeout and its hard limit (the pool kills or releases it).
HARD_KILL_GRACE_S = 5.0
# A running job's lease outlives its hard limit by this much; after that its worker
# is taken for dead and the job is taken again by the next fetch.
LEASE_MARGIN_MS = 2_000
MAX_JOB_ID_LENGTH = 64
# Job data is kept whole in Redis; anything bigger belongs in SQL, passed by id.
MAX_JOB_DATA_BYTES = 32 * 1024
MAX_TAG_VALUE_LENGTH = 100
PRIORITY_NONE = 0


@dataclass(frozen=True)
class PreparedJob:
    """A job checked and sealed once, ready for the store (or the outbox, then the store)."""

    record: JobRecord
    options: JobOptions
    sealed: str  # the data as the store and the outbox keep it

    @property
    def id(self) -> str:
        return self.record.id


def _dedup_group(deduplicate: Mapping[str, Any] | None) -> str | None:
    """keep_last_if_active keeps its follow-up behind the running job in a group of the key's own."""
    if deduplicate and deduplicate["mode"] == "keep_last_if_active":
        return f"dedup:{deduplicate['id']}"
    return None


def lease_ms(opts: JobOptions) -> int:
    """How long a fetched job may stay active before its worker is taken for dead."""
    return int(opts.timeout + HARD_KILL_GRACE_S * 1000 + LEASE_MARGIN_MS)


class JobQueue:
    """One named queue of the job store, run by one Celery task: a BullMQ Queue."""

    def __init__(
        self,
        policy: QueuePolicy,
        store: JobStore,
        defaults: JobOptions,
        retention: tuple[Retention, Retention],
        admission: Callable[[], None] | None = None,
    ) -> None:
        self.policy = policy
        self.name = policy.name
        self.task_name = policy.task
        self.store = store
        store.register(self.name)
        self.defaults = defaults
        self.keep_completed, self.keep_failed = retention
        # The service's queues (a flow's children may sit in any of them), set by JobService.
        self.peers: Mapping[str, JobQueue] = {self.name: self}
        # Checked before every add, on every path: raises QueueUnavailable when new jobs must wait.
        self.admission = admission

    # -- adding jobs ------------------------------------------------------------

    def prepare(
        self,
        data: Mapping[str, Any],
        *,
        job_id: str | None = None,
        owner: str | None = None,
        created_at: int | None = None,
        **options: Any,
    ) -> PreparedJob:
        """Resolve options, validate data and the id, seal the data: once per job, whatever adds it.

        Besides the options, tags={"rideId": 12} (or ["rideId:12"]) indexes the job for
        search, with the policy's tag fields of the data and the owner.
        """
        created_at = created_at or now_ms()
        extra_tags = options.pop("tags", None)
        opts = resolve_options(self.defaults, options, self.policy.priorities, now=created_at)
        self.validate(data)
        if job_id is not None and not (isinstance(job_id, str) and 0 < len(job_id) <= MAX_JOB_ID_LENGTH):
            raise ValueError(f"job_id must be a string of 1 to {MAX_JOB_ID_LENGTH} characters")
        record = JobRecord(
            id=job_id or uuid.uuid4().hex,
            queue=self.name,
            name=self.task_name,
            state="delayed" if opts.delay else "waiting",
            data=dict(data),
            opts=opts.to_dict(),
            owner=owner,
            created_at=created_at,
            tags=self.tags_of(data, owner, extra_tags),
            expires_at=opts.expires,
            trace=tracing.carrier(),
        )
        sealer = self.store.sealer
        return PreparedJob(record, opts, to_json(sealer.seal(data) if sealer else data))

    def add(
        self,
        data: Mapping[str, Any],
        *,
        job_id: str | None = None,
        owner: str | None = None,
        remember_ms: int = 0,
        **options: Any,
    ) -> Job:
        """Store a job and wake a worker; an existing job_id returns that job instead.

        remember_ms: the store remembers the id was added for that long, even once the
        job is done and removed (JobStore.was_added; the outbox's relay asks it).
        """
        return self.add_prepared(self.prepare(data, job_id=job_id, owner=owner, **options), remember_ms)

    def add_prepared(self, job: PreparedJob, remember_ms: int = 0) -> Job:
        """Store a job prepare() made (the outbox's way in): admission, then one script.

        A job whose deduplicate key is held returns the job that holds it (no new job).
        """
        self._admit()
        try:
            status, holder, *state = self._create(job, remember_ms)
        except RedisError as exc:
            raise QueueUnavailable(f"job store unreachable: {exc}") from exc
        if status != "created":
            existing = self.store.get(holder or job.id, self.name)
            if existing is not None:
                if status == "deduplicated":
                    log.info("job.deduplicated", extra={"job_id": existing.id, "queue": self.name})
                return existing
            if status == "deduplicated":
                # Mode throttle: the key's job is gone already, but its window still holds.
                return JobRecord(holder, self.name, self.task_name, "removed", {}, {}, store=self.store)
            raise QueueUnavailable(f"job {job.id} vanished while it was being added")
        self._log_created(job)
        job.record.store = self.store
        if state:
            job.record.state = state[0]  # waiting, delayed, or grouped (behind its group)
        return job.record

    def add_bulk(self, items: Sequence[Mapping[str, Any]], *, owner: str | None = None, **options: Any) -> list[Job]:
        """Store many jobs with the same options in one round trip, like BullMQ's addBulk.

        All or nothing: every item is checked before any is stored (InvalidJobData keys
        the errors by the item's index).
        """
        prepared: list[PreparedJob] = []
        errors: dict[str, Any] = {}
        created_at = now_ms()
        for index, data in enumerate(items):
            try:
                prepared.append(self.prepare(data, owner=owner, created_at=created_at, **options))
            except InvalidJobData as exc:
                errors[str(index)] = exc.errors
        if errors:
            raise InvalidJobData(errors)
        self._admit()
        try:
            with self.store.redis.pipeline(transaction=False) as pipe:
                for job in prepared:
                    self._create(job, 0, client=pipe)
                answers = pipe.execute()
        except RedisError as exc:
            raise QueueUnavailable(f"job store unreachable: {exc}") from exc
        out: list[Job] = []
        for job, (status, holder, *state) in zip(prepared, answers, strict=True):
            if status == "created":
                job.record.state = state[0]
                self._log_created(job)
                out.append(job.record)
            else:  # an id stored already, or a deduplicate key held: the job that stands for it
                out.append(self.store.get(holder or job.id, self.name) or job.record)
        return out

    def _admit(self) -> None:
        if self.admission is not None:
            self.admission()

    def _create(self, job: PreparedJob, remember_ms: int, client: Any = None) -> Any:
        return self.store.create(job.record, self._score(job), client=client, **self._add_options(job, remember_ms))

    def add_args(self, job: PreparedJob, remember_ms: int = 0) -> list[Any]:
        """What add_job (the scripts' include) takes for job: for a script that creates it on the way."""
        return self.store.add_args(job.record, self._score(job), **self._add_options(job, remember_ms))

    def _score(self, job: PreparedJob) -> int:
        opts, record = job.options, job.record
        if opts.delay:
            return record.created_at + opts.delay
        return (opts.priority or PRIORITY_NONE) * self.store.priority_step + record.created_at

    def _add_options(self, job: PreparedJob, remember_ms: int) -> dict[str, Any]:
        opts = job.options
        return {
            "lease_ms": lease_ms(opts),
            "priority": opts.priority or PRIORITY_NONE,
            "sealed": job.sealed,
            "remember_ms": remember_ms,
            "expires_at": opts.expires,
            "group": opts.group or _dedup_group(opts.deduplicate),
            "deduplicate": opts.deduplicate,
        }

    def tags_of(self, data: Mapping[str, Any], owner: str | None, extra: Any = None) -> list[str]:
        """What a job is found by: 'owner:<id>', the policy's tag fields of its data, and extra
        ({"rideId": 12} or ["rideId:12"]). Raises InvalidJobOptions for a bad extra."""
        pairs: dict[str, Any] = {}
        if owner:
            pairs["owner"] = owner
        for name in self.policy.tags:
            if data.get(name) not in (None, ""):
                pairs[name] = data[name]
        if extra is not None:
            if isinstance(extra, Mapping):
                items = list(extra.items())
            elif isinstance(extra, list | tuple) and all(isinstance(t, str) and ":" in t for t in extra):
                items = [tuple(t.split(":", 1)) for t in extra]
            else:
                raise InvalidJobOptions({"tags": "must be {field: value} or ['field:value']"})
            for name, value in items:
                if not (isinstance(name, str) and name.isidentifier() and len(name) <= 40):
                    raise InvalidJobOptions({"tags": f"{name!r}: a tag's field is a name of at most 40 characters"})
                pairs[name] = value
        tags = []
        for name, value in pairs.items():
            text = str(value)
            if isinstance(value, bool | dict | list) or not text or len(text) > MAX_TAG_VALUE_LENGTH:
                raise InvalidJobOptions({"tags": f"{name}: a tag's value is 1 to {MAX_TAG_VALUE_LENGTH} characters"})
            tags.append(f"{name}:{text}")
        return tags

    def _log_created(self, job: PreparedJob) -> None:
        log.info("job.created", extra={"job_id": job.id, "queue": self.name, "delay_ms": job.options.delay})

    def validate(self, data: Mapping[str, Any]) -> None:
        """Check data against the policy's schema and size; raises InvalidJobData naming each bad field."""
        try:
            size = len(json.dumps(data, separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            raise InvalidJobData({"_data": [f"must be JSON-serialisable: {exc}"]}) from exc
        if size > MAX_JOB_DATA_BYTES:
            raise InvalidJobData({"_data": [f"is {size} bytes; the most a job takes is {MAX_JOB_DATA_BYTES}"]})
        schema = self.policy.data_schema
        if schema is None:
            return
        errors = schema.validate(data)
        if errors:
            raise InvalidJobData(errors)

    # -- operators' moves (each a row of jobqueue.lifecycle.TRANSITIONS) ---------

    def retry(self, job_id: str, data: Mapping[str, Any] | None = None) -> str | None:
        """Put a failed job back to waiting (admin_retry), optionally with new data.

        Returns 'waiting', the state the job is in instead, or None for an unknown job.
        """
        return self.store.retry(job_id, self.name, data)

    def cancel(self, job_id: str, reason: str = "cancelled") -> str | None:
        """Cancel a job: a waiting or delayed one never runs; a running one is asked to stop
        (its check points raise JobCancelled, its worker's cancel watch cuts its deadline) and
        ends cancelled, never retried. Survives any restart: it is in the store.

        The policy's on_cancel hook runs first, for a job that has not finished: raising
        CancelRefused there refuses the cancel (propagated; nothing changes).

        Returns 'cancelled', 'cancelling' (running: asked), the finished state it is in
        (left alone), or None for an unknown job.
        """
        reason = (str(reason) or "cancelled")[:500]
        hook = self.policy.hook("on_cancel")
        if hook is not None:
            job = self.get_job(job_id)
            if job is None:
                return None
            if job.state not in FINISHED:
                hook(job, reason)
        outcome = self.store.cancel(job_id, self.name, reason, self.keep_failed)
        if outcome in ("cancelled", "cancelling"):
            self._cancel_children(job_id, reason)
        return outcome

    def _cancel_children(self, job_id: str, reason: str) -> None:
        """A flow parent cancelled: its children that have not finished are cancelled too (and theirs)."""
        # Every child, whatever its recorded end: one retried since runs again and is cancelled;
        # for a finished one the cancel changes nothing.
        for child in self.store.children(job_id, self.name):
            queue = self.peers.get(child["queue"])
            if queue is not None and child["state"] != "removed":
                try:
                    queue.cancel(child["id"], f"its parent {job_id} was cancelled: {reason}"[:500])
                except CancelRefused as exc:
                    log.warning("flow.child_cancel_refused", extra={"job_id": child["id"], "error": str(exc)})

    def snooze(self, job_id: str, delay_ms: int) -> str | None:
        """Run a job that has not started delay_ms from now instead (defer): 'delayed', the
        state it is in instead (running or finished: left alone), or None."""
        if not (isinstance(delay_ms, int) and not isinstance(delay_ms, bool) and delay_ms > 0):
            raise InvalidJobOptions({"delay": "must be a whole number of milliseconds, more than 0"})
        return self.store.defer(job_id, self.name, now_ms() + delay_ms)

    def update_data(self, job_id: str, data: Mapping[str, Any]) -> str | None:
        """Replace the data of a job that is not running, checked by the queue's schema:
        the job's state ('active': refused, unchanged), or None for an unknown job."""
        self.validate(data)
        return self.store.update_data(job_id, self.name, data)

    @property
    def flow(self) -> FlowControl:
        """This queue's limits in the store: get, set, set_group, throttle, status (jobqueue.limits)."""
        return FlowControl(self.store, self.name)

    def wait_until_finished(self, job_id: str, timeout: float) -> Job:
        """Block until the job is completed, failed, cancelled or expired (TimeoutError after timeout s)."""
        return self.store.wait_until_finished(job_id, self.name, timeout)

    def delete(self, job_id: str) -> str | None:
        """Remove a job that is not running: 'deleted', 'active' (left alone), or None."""
        return self.store.delete(job_id, self.name)

    def clean(self, state: str, grace_ms: int, limit: int) -> list[str]:
        """Remove up to limit jobs in state that reached it more than grace_ms ago; their ids."""
        return self.store.clean(self.name, state, grace_ms, limit)

    def pause(self) -> None:
        """Workers take no job of this queue until resume(); running jobs finish."""
        self.store.set_paused(self.name, True)

    def resume(self) -> None:
        self.store.set_paused(self.name, False)

    def is_paused(self) -> bool:
        return self.store.is_paused(self.name)

    # -- reading ----------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        """The job with this id if it belongs to this queue."""
        return self.store.get(job_id, self.name)

    def get_job_counts(self) -> dict[str, int]:
        """Jobs per state: waiting, delayed, active, completed, failed (and paused)."""
        return self.store.counts(self.name)

    def retention_for(self, job: Job, state: str) -> Retention:
        """The retention that applies to job once it reaches state (completed; failed,
        cancelled and expired keep as failed jobs do)."""
        if state == "completed":
            return Retention.parse(job.opts.get("removeOnComplete"), self.keep_completed)
        return Retention.parse(job.opts.get("removeOnFail"), self.keep_failed)


@dataclass(frozen=True)
class EngineSettings:
    """The app's settings the engine reads (BullMQ's names in the environment)."""

    attempts: int = 3  # JOB_RETRY_ATTEMPTS
    delay: int = 1000  # JOB_RETRY_DELAY (ms)
    timeout: int = 30000  # JOB_TIMEOUT (ms)
    keep_completed: int = -1
    keep_failed: int = -1
    max_stalls: int = 3


@dataclass
class JobService:
    """The queues of one app on one job store, and what its workers need to run them."""

    store: JobStore
    queues: dict[str, JobQueue]
    # Entered around every job (the app's context, say); none by default.
    context: Callable[[], AbstractContextManager[Any]] = nullcontext
    max_stalls: int = 3
    # Called by each worker's housekeeping tick: moves work left behind into the queues
    # (the transactional outbox's relay). Returns how many jobs it moved.
    relays: list[Callable[[], int]] = field(default_factory=list)
    # Whether each worker runs a scheduler (jobqueue.schedules.Scheduler) beside its housekeeping.
    run_scheduler: bool = True

    @classmethod
    def from_policies(
        cls,
        policies: Iterable[QueuePolicy],
        store: JobStore,
        settings: EngineSettings,
        *,
        admission: Callable[[], None] | None = None,
        context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> "JobService":
        """The engine for these policies: one JobQueue per policy, each with its defaults and retention."""
        retention = (Retention(count=settings.keep_completed), Retention(count=settings.keep_failed))
        queues = {
            policy.name: JobQueue(
                policy,
                store,
                policy.defaults(settings.attempts, settings.delay, settings.timeout),
                retention,
                admission,
            )
            for policy in policies
        }
        service = cls(store, queues, context=context, max_stalls=settings.max_stalls)
        for queue in queues.values():
            queue.peers = queues
        return service

    @cached_property
    def flows(self) -> Flows:
        """add_flow, the flow relay and compensation (jobqueue.flows)."""
        return Flows(self)

    def add_flow(self, root: FlowJob, **kwargs: Any) -> Job:
        """Store a flow of jobs (a parent waits for its children): see jobqueue.flows."""
        return self.flows.add_flow(root, **kwargs)

    def queue(self, name: str) -> JobQueue:
        return self.queues[name]

    @property
    def policies(self) -> list[QueuePolicy]:
        return [queue.policy for queue in self.queues.values()]

    @property
    def tasks(self) -> set[str]:
        """The Celery task names that run these queues' jobs."""
        return {queue.task_name for queue in self.queues.values()}
