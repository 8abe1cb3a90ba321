"""The queue API: add_email_job / add_analytics_job / add_payment_job, get_job, get_job_counts.

A Python mirror of the original design's ``utils/queue.js``. Adding a job
stores it in the job store first, then publishes a Celery message that
carries only the job id and its delivery number; the worker reads the data
from the store. A delayed job (or a retry waiting on its backoff) is held in
the job store, not in the broker, and published when it is due: no message
waits out a delay inside a worker, where a broker redelivery could run it twice.
"""

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery
from flask import current_app
from kombu.exceptions import OperationalError as KombuOperationalError
from marshmallow import Schema
from redis.exceptions import RedisError

from rideshare.jobs.options import JobOptions, resolve_options
from rideshare.jobs.store import JobRecord, JobStore, Retention, now_ms

log = logging.getLogger("rideshare.jobs")

Job = JobRecord
# One delivery to publish: job id, delivery number, the job's options.
Delivery = tuple[str, int, JobOptions]

# Seconds between the soft time limit (the task sees an exception) and the hard kill.
HARD_KILL_GRACE_S = 5.0
# A running job's lease outlives its hard kill by this much; after that its worker
# is taken for dead and the job is delivered again.
LEASE_MARGIN_MS = 2_000
# A delivery the broker refused is tried again after this long.
RETRY_PUBLISH_MS = 1_000
MAX_JOB_ID_LENGTH = 64
# Job data is kept whole in Redis; anything bigger belongs in SQL, passed by id.
MAX_JOB_DATA_BYTES = 32 * 1024


class QueueUnavailable(RuntimeError):
    """The broker or the job store could not take the job; nothing was stored."""


class InvalidJobData(ValueError):
    """Job data that its queue's schema rejects; .errors names each bad field."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(f"invalid job data: {errors}")
        self.errors = errors


class JobQueue:
    """One named queue, served by one Celery task, like a BullMQ Queue."""

    def __init__(
        self,
        name: str,
        task_name: str,
        celery: Celery,
        store: JobStore,
        defaults: JobOptions,
        retention: tuple[Retention, Retention],
    ) -> None:
        self.name = name
        self.task_name = task_name
        self.celery = celery
        self.store = store
        self.defaults = defaults
        self.keep_completed, self.keep_failed = retention

    def add(
        self,
        data: Mapping[str, Any],
        *,
        job_id: str | None = None,
        owner: str | None = None,
        **options: Any,
    ) -> Job:
        """Store and publish a job; an existing job_id returns that job instead."""
        opts = resolve_options(self.defaults, options)
        self.validate(data)
        if job_id is not None and not (isinstance(job_id, str) and 0 < len(job_id) <= MAX_JOB_ID_LENGTH):
            raise ValueError(f"job_id must be a string of 1 to {MAX_JOB_ID_LENGTH} characters")
        job_id = job_id or uuid.uuid4().hex
        created_at = now_ms()
        record = self._record(job_id, data, opts, owner, created_at)
        try:
            created = self.store.create(record, score=created_at + opts.delay)
        except RedisError as exc:
            raise QueueUnavailable(f"job store unreachable: {exc}") from exc
        if not created:
            existing = self.store.get(job_id)
            if existing is not None:
                return existing
            raise QueueUnavailable(f"job {job_id} vanished while it was being added")
        try:
            if not opts.delay:  # a delayed job is published by a worker's scheduler when due
                self.publish(record.id, 1, opts)
        except (KombuOperationalError, RedisError, OSError) as exc:
            # Never leave a job the broker does not hold: undo the store write.
            try:
                self.store.discard(job_id, self.name)
            except RedisError:
                log.error("job.orphaned", extra={"job_id": job_id, "queue": self.name})
            raise QueueUnavailable(f"broker unreachable: {exc}") from exc
        self._log_created(record, opts)
        return record

    def add_bulk(self, items: Sequence[Mapping[str, Any]], *, owner: str | None = None, **options: Any) -> list[Job]:
        """Store and publish many jobs with the same options, like BullMQ's addBulk.

        All or nothing: every item is checked before any is stored (InvalidJobData
        keys the errors by the item's index), and if the broker refuses them none
        is kept. The jobs are stored in one round trip and go to the broker in
        messages of up to the task's batch_size jobs each.
        """
        opts = resolve_options(self.defaults, options)
        errors: dict[str, Any] = {}
        for index, data in enumerate(items):
            try:
                self.validate(data)
            except InvalidJobData as exc:
                errors[str(index)] = exc.errors
        if errors:
            raise InvalidJobData(errors)
        created_at = now_ms()
        records = [self._record(uuid.uuid4().hex, data, opts, owner, created_at) for data in items]
        try:
            self.store.create_many(records, [created_at + opts.delay] * len(records))
        except RedisError as exc:
            raise QueueUnavailable(f"job store unreachable: {exc}") from exc
        if not opts.delay:
            try:
                with self.celery.producer_or_acquire() as producer:
                    for chunk in self._chunks([(r.id, 1, opts) for r in records]):
                        self._send(chunk, producer)
            except (KombuOperationalError, RedisError, OSError) as exc:
                # None of them is kept; a message already sent finds no job and is skipped.
                try:
                    for record in records:
                        self.store.discard(record.id, self.name)
                except RedisError:
                    log.error("jobs.orphaned", extra={"queue": self.name, "jobs": len(records)})
                raise QueueUnavailable(f"broker unreachable: {exc}") from exc
        for record in records:
            self._log_created(record, opts)
        return records

    def _log_created(self, record: JobRecord, opts: JobOptions) -> None:
        log.info(
            "job.created",
            extra={"job_id": record.id, "queue": self.name, "task": self.task_name, "delay_ms": opts.delay},
        )

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

    @property
    def batch_size(self) -> int:
        """Most jobs per broker message: the task's batch_size (1 unless the task says so)."""
        return max(1, int(getattr(self.task, "batch_size", 1) or 1))

    def _chunks(self, deliveries: list[Delivery]) -> list[list[Delivery]]:
        size = self.batch_size
        return [deliveries[i : i + size] for i in range(0, len(deliveries), size)]

    def _send(self, chunk: list[Delivery], producer: Any) -> None:
        """One message: a single job's delivery, or a batch of them run in turn by one worker."""
        if len(chunk) == 1:
            job_id, seq, opts = chunk[0]
            self.publish(job_id, seq, opts, producer=producer)
            return
        priorities = [opts.priority for _, _, opts in chunk if opts.priority is not None]
        self.celery.send_task(
            self.task_name,
            args=[[[job_id, seq, opts.timeout] for job_id, seq, opts in chunk]],
            task_id=f"batch-{uuid.uuid4().hex}",
            queue=self.name,
            routing_key=self.name,
            priority=min(priorities) if priorities else None,
            # Each job has its own timer; the hard limit covers them all in turn.
            time_limit=sum(opts.timeout / 1000 + HARD_KILL_GRACE_S for _, _, opts in chunk),
            ignore_result=True,
            producer=producer,
        )

    @property
    def task(self) -> Any:
        """The JobTask that runs this queue's jobs."""
        return self.celery.tasks[self.task_name]

    def validate(self, data: Mapping[str, Any]) -> None:
        """Check data against the task's schema and size; raises InvalidJobData naming each bad field."""
        try:
            size = len(json.dumps(data, separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            raise InvalidJobData({"_data": [f"must be JSON-serialisable: {exc}"]}) from exc
        if size > MAX_JOB_DATA_BYTES:
            raise InvalidJobData({"_data": [f"is {size} bytes; the most a job takes is {MAX_JOB_DATA_BYTES}"]})
        schema = self._data_schema()
        if schema is None:
            return
        errors = schema.validate(data)
        if errors:
            raise InvalidJobData(errors)

    def _data_schema(self) -> Schema | None:
        """The task's data schema, built once: a schema holds no state between validations."""
        if not hasattr(self, "_schema"):
            schema_cls = getattr(self.task, "data_schema", None)
            self._schema = schema_cls() if schema_cls is not None else None
        return self._schema

    def publish(self, job_id: str, seq: int, opts: JobOptions, producer: Any = None) -> None:
        """Send one delivery of a job to the broker: the job id and its delivery number."""
        timeout_s = opts.timeout / 1000
        self.celery.send_task(
            self.task_name,
            args=[job_id, seq],
            task_id=job_id,
            queue=self.name,
            routing_key=self.name,
            priority=opts.priority,
            # The timeout itself is enforced inside the job (JobTask's own timer);
            # the hard limit kills a job that ignores it.
            time_limit=timeout_s + HARD_KILL_GRACE_S,
            ignore_result=True,
            producer=producer,
        )

    @staticmethod
    def lease_ms(opts: JobOptions) -> int:
        """How long a started job may stay active before its worker is taken for dead."""
        return int(opts.timeout + HARD_KILL_GRACE_S * 1000 + LEASE_MARGIN_MS)

    def publish_many(self, deliveries: list[tuple[str, int]]) -> int:
        """Publish (job id, delivery number) pairs, batched as the task allows; returns how many."""
        if not deliveries:
            return 0
        jobs = self.store.get_many([job_id for job_id, _ in deliveries])
        found = [
            (job_id, seq, JobOptions.from_dict(job.opts))
            for (job_id, seq), job in zip(deliveries, jobs, strict=True)
            if job is not None
        ]
        sent = 0
        try:
            with self.celery.producer_or_acquire() as producer:
                for chunk in self._chunks(found):
                    self._send(chunk, producer)
                    sent += len(chunk)
        except (KombuOperationalError, RedisError, OSError):
            # Hand the unsent ones back to the delayed set, due in a second, so the
            # next scheduler tick tries again once the broker answers.
            self.store.defer([job_id for job_id, _, _ in found[sent:]], self.name, RETRY_PUBLISH_MS)
            raise
        return len(deliveries)

    def promote_due(self) -> int:
        """Publish the delayed jobs (delays, retry backoffs) that are due; returns how many."""
        return self.publish_many(self.store.promote(self.name))

    def recover(self, max_stalls: int, stale_ms: int) -> int:
        """Deliver again the jobs whose worker died, and waiting jobs whose message went missing."""
        return self.publish_many(self.store.recover(self.name, max_stalls=max_stalls, stale_ms=stale_ms))

    def get_job(self, job_id: str) -> Job | None:
        """The job with this id if it belongs to this queue."""
        job = self.store.get(job_id)
        return job if job is not None and job.queue == self.name else None

    def get_job_counts(self) -> dict[str, int]:
        """Jobs per state: waiting, delayed, active, completed, failed."""
        return self.store.counts(self.name)

    def retention_for(self, job: Job, state: str) -> Retention:
        """The retention that applies to job once it reaches state (completed or failed)."""
        if state == "completed":
            return Retention.parse(job.opts.get("removeOnComplete"), self.keep_completed)
        return Retention.parse(job.opts.get("removeOnFail"), self.keep_failed)


class JobService:
    """The queues of one app, bound as app.extensions['jobs']."""

    def __init__(self, store: JobStore, queues: dict[str, JobQueue]) -> None:
        self.store = store
        self.queues = queues


def _service() -> JobService:
    return current_app.extensions["jobs"]


def get_queue(name: str) -> JobQueue:
    """The queue called name (email, analytics or payment)."""
    return _service().queues[name]


def add_email_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue an email: data has to, subject, text and optionally html."""
    return get_queue("email").add(data, **options)


def add_analytics_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue an analytics event: data has event, eventId and the event's fields."""
    return get_queue("analytics").add(data, **options)


def add_analytics_jobs(items: Sequence[Mapping[str, Any]], **options: Any) -> list[Job]:
    """Queue many analytics events at once (JobQueue.add_bulk)."""
    return get_queue("analytics").add_bulk(items, **options)


def add_payment_job(data: Mapping[str, Any], **options: Any) -> Job:
    """Queue a payment charge: data has paymentId, the SQL row to charge."""
    return get_queue("payment").add(data, **options)


def get_job(job_id: str) -> Job | None:
    """Any queue's job by id, or None if there is no such job."""
    return _service().store.get(job_id)


def get_job_counts(queue: str) -> dict[str, int]:
    """Jobs per state in one queue."""
    return get_queue(queue).get_job_counts()
