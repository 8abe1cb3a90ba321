"""A transactional outbox: a job written in the app's own SQL transaction, published after its commit.

As Oban and River enqueue inside the app's transaction, ``Outbox.stage`` writes
the job (queue, data, options, owner) as a row of the outbox table on the
caller's connection, so a domain row and its job are committed together or not
at all. Right after the commit the caller publishes it (``Outbox.publish``):
the job is added to the store and broker, then its row is deleted. A process
that dies between the commit and the publish leaves the row behind; the relay,
which every worker's scheduler tick calls (``JobService.relays``), adds the
rows older than ``settle_ms`` and deletes them.

The job id is the row's key and adding a job is idempotent by id, so a relay
that dies half-way, two relays at once, or a relay racing a late publish make
one job. A relay claims its rows by deleting them in a transaction that it
commits only once their jobs are added (on PostgreSQL ``FOR UPDATE SKIP
LOCKED`` lets relays share the rows; SQLite serialises them on its write
lock): a relay that dies gives its rows back when its transaction rolls back.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, Text, delete, func, insert, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from jobqueue.errors import QueueUnavailable
from jobqueue.options import InvalidJobOptions, resolve_options
from jobqueue.queue import MAX_JOB_ID_LENGTH, Job, JobQueue, PreparedJob
from jobqueue.store import JobRecord, now_ms, to_json

log = logging.getLogger("jobqueue")

# A staged job is left to the request that staged it this long before a relay takes it.
SETTLE_MS = 2_000
# A published job's id is remembered by the job store this long after it was added,
# so a relay that finds its row (the process died before dropping it) does not add
# it again even once the job has run and been removed.
REMEMBER_MS = 3_600_000
# Rows of published jobs are dropped in batches, this often, off the request's path.
DROP_INTERVAL_S = 0.05
# The most rows one relay call moves.
RELAY_BATCH = 500


def outbox_table(metadata: MetaData, name: str = "job_outbox") -> Table:
    """The outbox table, declared on the app's metadata so the app's migrations create it."""
    return Table(
        name,
        metadata,
        Column("job_id", String(MAX_JOB_ID_LENGTH), primary_key=True),
        Column("queue", String(64), nullable=False),
        # JSON; fields the job store seals are sealed here too.
        Column("data", Text, nullable=False),
        Column("options", Text, nullable=False),
        Column("owner", String(64)),
        Column("created_at", BigInteger, nullable=False, index=True),  # ms
    )


@dataclass(frozen=True)
class StagedJob:
    """A job written to the outbox and not yet published: checked and sealed once, when staged."""

    queue: str
    job: PreparedJob

    @property
    def job_id(self) -> str:
        return self.job.id


class Outbox:
    """Stages jobs in the app's transactions and moves them to their queues."""

    def __init__(
        self,
        table: Table,
        engine: Callable[[], Engine],
        queues: Mapping[str, JobQueue],
        *,
        settle_ms: int = SETTLE_MS,
        batch_size: int = RELAY_BATCH,
    ) -> None:
        self.table = table
        # A callable: the app may rebuild its engine (a bigger pool) after this is made.
        self.engine = engine
        self.queues = queues
        self.settle_ms = settle_ms
        self.batch_size = batch_size
        self._published: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._dropper: threading.Thread | None = None

    def stage(
        self,
        conn: Connection | Session,
        queue: JobQueue | str,
        data: Mapping[str, Any],
        *,
        job_id: str,
        owner: str | None = None,
        **options: Any,
    ) -> StagedJob:
        """Prepare the job as JobQueue.add does (once) and INSERT it in conn's transaction.

        Publish it after the commit.
        """
        target = self.queues[queue] if isinstance(queue, str) else queue
        if not (isinstance(job_id, str) and 0 < len(job_id) <= MAX_JOB_ID_LENGTH):
            raise ValueError(f"job_id must be a string of 1 to {MAX_JOB_ID_LENGTH} characters")
        job = target.prepare(data, job_id=job_id, owner=owner, **options)
        # What the relay cannot work out again from the sealed data, kept as prepare decided it:
        # the tags, the expiry as an absolute time, and the trace the job joins.
        options = {**options, "tags": job.record.tags}
        if job.record.trace:
            options["trace"] = job.record.trace
        if job.options.expires:
            options["expires"] = datetime.fromtimestamp(job.options.expires / 1000, UTC).isoformat()
        conn.execute(
            insert(self.table).values(
                job_id=job_id,
                queue=target.name,
                data=job.sealed,
                options=to_json(options),
                owner=owner,
                created_at=job.record.created_at,
            )
        )
        return StagedJob(target.name, job)

    def publish(self, staged: StagedJob) -> Job:
        """Add a committed staged job to its queue; raises QueueUnavailable, leaving the row.

        Its row is dropped soon after, in a batch with others, off the request's path: the
        request makes one SQL transaction. A row left behind (the process died first) is
        found by a relay, which sees the job was added (JobStore.was_added) and only drops it.
        """
        job = self.queues[staged.queue].add_prepared(staged.job, remember_ms=REMEMBER_MS)
        with self._lock:
            self._published.append(staged.job_id)
            if self._dropper is None or not self._dropper.is_alive():
                self._dropper = threading.Thread(target=self._drop_published, name="outbox-dropper", daemon=True)
                self._dropper.start()
        self._wake.set()
        return job

    def flush(self) -> None:
        """Drop the rows of the jobs published so far, now."""
        with self._lock:
            ids, self._published = self._published, []
        if not ids:
            return
        try:
            with self.engine().begin() as conn:
                conn.execute(delete(self.table).where(self.table.c.job_id.in_(ids)))
        except SQLAlchemyError as exc:
            # The jobs are queued; a relay drops the rows it finds later.
            log.warning("outbox.drop_failed", extra={"count": len(ids), "error": str(exc)})

    def _drop_published(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(DROP_INTERVAL_S)  # gather the rows of the requests around this one
            self._wake.clear()
            self.flush()

    def publish_left_behind(self, job_id: str) -> Job | None:
        """Publish the row of job_id if it is still in the outbox; None if it is not there."""
        claim = delete(self.table).where(self.table.c.job_id == job_id).returning(*self.table.c)
        moved = self._move(claim)
        return moved[0] if moved else None

    def withdraw(self, conn: Connection | Session, job_id: str) -> bool:
        """Delete a staged row in conn's transaction (to undo its domain rows); False if a relay took it."""
        return conn.execute(delete(self.table).where(self.table.c.job_id == job_id)).rowcount == 1

    def relay(self) -> int:
        """Publish rows older than settle_ms, at most batch_size of them; returns how many were moved.

        Never raises for an unreachable store or database: the next call tries again.
        """
        t = self.table
        due = (t.c.created_at < now_ms() - self.settle_ms) & t.c.queue.in_(list(self.queues))
        try:
            with self.engine().connect() as conn:
                # A plain read first: most calls find nothing and take no lock.
                if conn.execute(select(t.c.job_id).where(due).limit(1)).first() is None:
                    return 0
            rows = select(t.c.job_id).where(due).order_by(t.c.created_at).limit(self.batch_size)
            moved = self._move(delete(t).where(t.c.job_id.in_(rows.with_for_update(skip_locked=True))).returning(*t.c))
        except (QueueUnavailable, SQLAlchemyError) as exc:
            log.warning("outbox.relay_failed", extra={"error": str(exc)})
            return 0
        if moved:
            # Each one was left by a process that died, or could not reach the queue, after its commit.
            log.warning("outbox.relayed", extra={"count": len(moved)})
        return len(moved)

    def pending(self) -> int:
        """Rows waiting in the outbox (those of published jobs dropped first)."""
        self.flush()
        with self.engine().connect() as conn:
            return conn.execute(select(func.count()).select_from(self.table)).scalar_one()

    def _move(self, claim: Any) -> list[Job]:
        """Delete the rows claim returns and add their jobs, in one transaction committed after the adds.

        If an add fails the rows not yet added are written back before the commit,
        and the error is raised: nothing is lost, and nothing added is kept twice.
        """
        jobs: list[Job] = []
        failed: QueueUnavailable | None = None
        with self.engine().connect() as conn, conn.begin():
            # In the order they were staged: DELETE ... RETURNING keeps no order (PostgreSQL), and a
            # group's jobs, or a debounced key's newest data, depend on it.
            rows = sorted(conn.execute(claim).all(), key=lambda row: row.created_at)
            for index, row in enumerate(rows):
                try:
                    job = self._add(row)
                except QueueUnavailable as exc:
                    conn.execute(insert(self.table), [dict(r._mapping) for r in rows[index:]])
                    failed = exc
                    break
                if job is not None:
                    jobs.append(job)
        if failed is not None:
            raise failed
        return jobs

    def _add(self, row: Row[Any]) -> Job | None:
        queue = self.queues[row.queue]
        if queue.store.was_added([row.job_id], queue.name)[0]:
            return queue.get_job(row.job_id)  # published already; only its row was left
        options = json.loads(row.options)
        tags = options.pop("tags", None) or []
        trace = options.pop("trace", "")
        try:
            # now=0: the expiry was kept as an absolute time; one past already ends the job expired.
            opts = resolve_options(queue.defaults, options, queue.policy.priorities, now=0)
        except InvalidJobOptions as exc:
            # They passed when staged; the queue's policy changed since. It can never be added,
            # so it is dropped, loudly, rather than retried for ever.
            log.error("outbox.rejected", extra={"job_id": row.job_id, "queue": row.queue, "error": str(exc)})
            return None
        record = JobRecord(
            id=row.job_id,
            queue=queue.name,
            name=queue.task_name,
            state="delayed" if opts.delay else "waiting",
            data={},
            opts=opts.to_dict(),
            owner=row.owner,
            created_at=now_ms(),
            tags=tags,
            trace=trace,
        )
        # Checked and sealed when it was staged: added as it was written.
        return queue.add_prepared(PreparedJob(record, opts, row.data), remember_ms=REMEMBER_MS)
