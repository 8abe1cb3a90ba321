"""The queue API: add, add_bulk, get_job, get_job_counts, in BullMQ's vocabulary.

Adding a job stores it in the job store and, on a Redis broker, pushes its
Celery message in the same script: one round trip, and no moment when the job
exists without its message or the message without its job. On another broker
(RabbitMQ) the message is published after the store write, and the write is
undone if the broker refuses it. The message carries only the job id and its
delivery number; the worker reads the data from the store. A delayed job (or a
retry waiting on its backoff) is held in the job store, not in the broker, and
published when it is due.
"""

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from jobqueue.errors import InvalidJobData, QueueUnavailable
from jobqueue.options import JobOptions, resolve_options
from jobqueue.policy import QueuePolicy
from jobqueue.store import JobRecord, JobStore, Retention, now_ms
from jobqueue.transport import RedisMessages

log = logging.getLogger("jobqueue")

Job = JobRecord
# One delivery to publish: job id, delivery number, the job's options.
Delivery = tuple[str, int, JobOptions]

# Seconds between a job's timeout and its hard limit (the pool kills or releases it).
HARD_KILL_GRACE_S = 5.0
# A running job's lease outlives its hard limit by this much; after that its worker
# is taken for dead and the job is delivered again.
LEASE_MARGIN_MS = 2_000
# A delivery the broker refused is tried again after this long.
RETRY_PUBLISH_MS = 1_000
MAX_JOB_ID_LENGTH = 64
# Job data is kept whole in Redis; anything bigger belongs in SQL, passed by id.
MAX_JOB_DATA_BYTES = 32 * 1024
BROKER_ERRORS = (KombuOperationalError, RedisError, OSError)
# On a broker with acks of its own (RabbitMQ), the lost-message sweep's bound.
STALE_WAITING_ELSEWHERE_MS = 300_000


class JobQueue:
    """One named queue, served by one Celery task, like a BullMQ Queue."""

    def __init__(
        self,
        policy: QueuePolicy,
        celery: Celery,
        store: JobStore,
        defaults: JobOptions,
        retention: tuple[Retention, Retention],
        *,
        direct: bool = True,
    ) -> None:
        self.policy = policy
        self.name = policy.name
        self.task_name = policy.task
        self.celery = celery
        self.store = store
        self.defaults = defaults
        self.keep_completed, self.keep_failed = retention
        # direct: the broker is the job store's Redis, so messages go in the store's scripts.
        self.messages = RedisMessages(celery) if direct else None
        # Checked before every add: raises QueueUnavailable when new jobs must wait (memory).
        self.admission: Callable[[], None] | None = None

    # -- adding jobs ------------------------------------------------------------

    def add(
        self,
        data: Mapping[str, Any],
        *,
        job_id: str | None = None,
        owner: str | None = None,
        remember_ms: int = 0,
        **options: Any,
    ) -> Job:
        """Store and publish a job; an existing job_id returns that job instead.

        remember_ms: the store remembers the id was added for that long, even once the
        job is done and removed (JobStore.was_added; the outbox's relay asks it).
        """
        opts = resolve_options(self.defaults, options, self.policy.priorities)
        self.validate(data)
        if job_id is not None and not (isinstance(job_id, str) and 0 < len(job_id) <= MAX_JOB_ID_LENGTH):
            raise ValueError(f"job_id must be a string of 1 to {MAX_JOB_ID_LENGTH} characters")
        if self.admission is not None:
            self.admission()
        record = self._record(job_id or uuid.uuid4().hex, data, opts, owner, now_ms())
        try:
            created = self._store([record], opts, remember_ms)[0]
        except RedisError as exc:
            raise QueueUnavailable(f"job store unreachable: {exc}") from exc
        if not created:
            existing = self.store.get(record.id)
            if existing is not None:
                return existing
            raise QueueUnavailable(f"job {record.id} vanished while it was being added")
        self._log_created(record, opts)
        return record

    def add_bulk(self, items: Sequence[Mapping[str, Any]], *, owner: str | None = None, **options: Any) -> list[Job]:
        """Store and publish many jobs with the same options, like BullMQ's addBulk.

        All or nothing: every item is checked before any is stored (InvalidJobData
        keys the errors by the item's index), and if the broker refuses them none
        is kept. The jobs are stored in one round trip and go to the broker in
        messages of up to the policy's batch_size jobs each.
        """
        opts = resolve_options(self.defaults, options, self.policy.priorities)
        errors: dict[str, Any] = {}
        for index, data in enumerate(items):
            try:
                self.validate(data)
            except InvalidJobData as exc:
                errors[str(index)] = exc.errors
        if errors:
            raise InvalidJobData(errors)
        if self.admission is not None:
            self.admission()
        created_at = now_ms()
        records = [self._record(uuid.uuid4().hex, data, opts, owner, created_at) for data in items]
        try:
            self._store(records, opts)
        except RedisError as exc:
            raise QueueUnavailable(f"job store unreachable: {exc}") from exc
        for record in records:
            self._log_created(record, opts)
        return records

    def _store(self, records: list[JobRecord], opts: JobOptions, remember_ms: int = 0) -> list[bool]:
        """Write new jobs with their messages: in the add script on Redis, else store then publish."""
        scores = [r.created_at + opts.delay for r in records]
        if opts.delay or self.messages is not None:
            # Nothing to publish apart: a delayed job is published by a worker's scheduler
            # when due, and on Redis the add script pushes the message itself.
            messages: list[tuple[str, str]] = [("", "")] * len(records)
            if not opts.delay:
                index = 0  # a batch message rides with the first job of its chunk
                for chunk in self._chunks([(r.id, 1, opts) for r in records]):
                    messages[index] = self._message(chunk)
                    index += len(chunk)
            if len(records) == 1:
                (message, key), record = messages[0], records[0]
                return [self.store.create(record, scores[0], message=message, broker_key=key, remember_ms=remember_ms)]
            return self.store.create_many(records, scores, messages, remember_ms)
        created = self.store.create_many(records, scores, remember_ms=remember_ms)
        try:
            with self.celery.producer_or_acquire() as producer:
                for chunk in self._chunks([(r.id, 1, opts) for r, new in zip(records, created, strict=True) if new]):
                    self._send(chunk, producer)
        except BROKER_ERRORS as exc:
            # Never leave a job the broker does not hold: undo the store writes.
            try:
                for record, new in zip(records, created, strict=True):
                    if new:
                        self.store.discard(record.id, self.name)
            except RedisError:
                log.error("jobs.orphaned", extra={"queue": self.name, "jobs": len(records)})
            raise QueueUnavailable(f"broker unreachable: {exc}") from exc
        return created

    def _log_created(self, record: JobRecord, opts: JobOptions) -> None:
        log.info("job.created", extra={"job_id": record.id, "queue": self.name, "delay_ms": opts.delay})

    def _record(
        self, job_id: str, data: Mapping[str, Any], opts: JobOptions, owner: str | None, created_at: int
    ) -> JobRecord:
        return JobRecord(
            id=job_id,
            queue=self.name,
            name=self.task_name,
            state="delayed" if opts.delay else "waiting",
            data=dict(data),
            opts=opts.to_dict(),
            owner=owner,
            created_at=created_at,
        )

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

    # -- messages ---------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return max(1, self.policy.batch_size)

    def _chunks(self, deliveries: list[Delivery]) -> list[list[Delivery]]:
        size = self.batch_size
        return [deliveries[i : i + size] for i in range(0, len(deliveries), size)]

    @staticmethod
    def _call(chunk: list[Delivery]) -> tuple[list[Any], str, int | None, float]:
        """A message's args, task id, priority and hard time limit (seconds)."""
        if len(chunk) == 1:
            job_id, seq, opts = chunk[0]
            # The timeout itself is kept inside the job; the hard limit stops a job that ignores it.
            return [job_id, seq], job_id, opts.priority, opts.timeout / 1000 + HARD_KILL_GRACE_S
        priorities = [opts.priority for _, _, opts in chunk if opts.priority is not None]
        return (
            [[[job_id, seq, opts.timeout] for job_id, seq, opts in chunk]],
            f"batch-{uuid.uuid4().hex}",
            min(priorities) if priorities else None,
            # Each job has its own timer; the hard limit covers them all in turn.
            sum(opts.timeout / 1000 + HARD_KILL_GRACE_S for _, _, opts in chunk),
        )

    def _message(self, chunk: list[Delivery]) -> tuple[str, str]:
        """The Redis broker message for a chunk, and the list it goes to."""
        assert self.messages is not None
        args, task_id, priority, limit = self._call(chunk)
        message = self.messages.message(self.task_name, task_id, args, self.name, priority=priority, time_limit=limit)
        return message, self.messages.key(self.name, priority)

    def _send(self, chunk: list[Delivery], producer: Any) -> None:
        """Publish one message through Celery (a broker other than the job store's Redis)."""
        args, task_id, priority, limit = self._call(chunk)
        self.celery.send_task(
            self.task_name,
            args=args,
            task_id=task_id,
            queue=self.name,
            routing_key=self.name,
            priority=priority,
            time_limit=limit,
            ignore_result=True,
            producer=producer,
        )

    def publish(self, job_id: str, seq: int, opts: JobOptions) -> None:
        """Send one delivery of a job to the broker: the job id and its delivery number."""
        self._publish_chunks([[(job_id, seq, opts)]])

    def _publish_chunks(self, chunks: list[list[Delivery]]) -> None:
        if self.messages is not None:
            with self.store.redis.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    message, key = self._message(chunk)
                    pipe.lpush(key, message)
                pipe.execute()
            return
        with self.celery.producer_or_acquire() as producer:
            for chunk in chunks:
                self._send(chunk, producer)

    @staticmethod
    def lease_ms(opts: JobOptions) -> int:
        """How long a started job may stay active before its worker is taken for dead."""
        return int(opts.timeout + HARD_KILL_GRACE_S * 1000 + LEASE_MARGIN_MS)

    def publish_many(self, deliveries: list[tuple[str, int]]) -> int:
        """Publish (job id, delivery number) pairs, batched as the policy allows; returns how many."""
        if not deliveries:
            return 0
        jobs = self.store.get_many([job_id for job_id, _ in deliveries])
        found = [
            (job_id, seq, JobOptions.from_dict(job.opts))
            for (job_id, seq), job in zip(deliveries, jobs, strict=True)
            if job is not None
        ]
        try:
            self._publish_chunks(self._chunks(found))
        except BROKER_ERRORS:
            # Hand them back to the delayed set, due in a second, so the next scheduler
            # tick tries again once the broker answers (a copy already sent is skipped
            # by its delivery number).
            self.store.defer([job_id for job_id, _, _ in found], self.name, RETRY_PUBLISH_MS)
            raise
        return len(deliveries)

    def promote_due(self) -> int:
        """Publish the delayed jobs (delays, retry backoffs) that are due; returns how many."""
        return self.publish_many(self.store.promote(self.name))

    def oldest_in_broker(self) -> int | None:
        """When the oldest message still in the broker was published (ms), or None if there is none.

        A waiting job that entered waiting before then cannot have its message in the
        broker any more: it is running, in a worker's prefetch buffer, or lost.
        """
        assert self.messages is not None
        keys = dict.fromkeys(self.messages.key(self.name, level) for level in range(self.policy.priorities))
        with self.store.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lindex(key, -1)  # BRPOP takes from the right: the oldest message
            tails = [raw for raw in pipe.execute() if raw]
        if not tails:
            return None
        # A message from elsewhere (no publish time) counts as just published: nothing is taken for lost.
        return min(RedisMessages.published_at(raw) or now_ms() for raw in tails)

    def recover(self, max_stalls: int, lost_after_ms: int) -> int:
        """Deliver again the jobs whose worker died, and waiting jobs whose message was lost."""
        if self.messages is None:
            # Another broker (RabbitMQ) hands a dead consumer's unacked messages back itself;
            # only a message lost inside the broker is left, looked for after 5 minutes.
            lost_after_ms = max(lost_after_ms, STALE_WAITING_ELSEWHERE_MS)
            lost_before = now_ms() - lost_after_ms
        else:
            lost_before = now_ms() - lost_after_ms
            oldest = self.oldest_in_broker()
            if oldest is not None:
                lost_before = min(lost_before, oldest)
        return self.publish_many(self.store.recover(self.name, max_stalls=max_stalls, lost_before=lost_before))

    # -- reading ----------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        """The job with this id if it belongs to this queue."""
        job = self.store.get(job_id)
        return job if job is not None and job.queue == self.name else None

    def get_job_counts(self) -> dict[str, int]:
        """Jobs per state: waiting, delayed, active, completed, failed (and paused)."""
        return self.store.counts(self.name)

    def retention_for(self, job: Job, state: str) -> Retention:
        """The retention that applies to job once it reaches state (completed or failed)."""
        if state == "completed":
            return Retention.parse(job.opts.get("removeOnComplete"), self.keep_completed)
        return Retention.parse(job.opts.get("removeOnFail"), self.keep_failed)


@dataclass
class JobService:
    """The queues of one Celery app, and what its workers need to run them."""

    store: JobStore
    queues: dict[str, JobQueue]
    # Entered around every job (the app's context, say); none by default.
    context: Callable[[], AbstractContextManager[Any]] = nullcontext
    max_stalls: int = 3
    # A waiting job whose message was taken by a worker that died before starting it is
    # delivered again this long after it was published (and once the broker no longer
    # holds anything older).
    lost_after_ms: int = 10_000
    # Called by each worker's scheduler tick: moves work left behind into the queues
    # (the transactional outbox's relay). Returns how many jobs it moved.
    relays: list[Callable[[], int]] = field(default_factory=list)

    def queue(self, name: str) -> JobQueue:
        return self.queues[name]
