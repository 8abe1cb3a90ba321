"""Operator actions on jobs and queues, shared by the admin API, the dashboard and the CLI.

Every action that changes something is written to the audit log.
"""

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from flask import current_app
from redis.exceptions import RedisError

from jobqueue import CancelRefused, InvalidJobOptions, Job, JobService, QueueUnavailable
from jobqueue.lifecycle import PENDING
from jobqueue.store import STATES, percentiles
from rideshare.audit import audit, audit_entries  # noqa: F401 - audit_entries is part of this module's face
from rideshare.jobs import get_job, get_queue

log = logging.getLogger("rideshare.admin")

CLEANABLE_STATES = ("waiting", "delayed", "completed", "failed", "cancelled", "expired")
# An operator's retry (admin_retry in jobqueue.lifecycle) takes a job back from these.
RETRYABLE_STATES = ("failed", "cancelled", "expired")


class JobNotFound(LookupError):
    """No job with that id."""


class JobStateConflict(Exception):
    """The job is in a state that does not allow the action."""

    def __init__(self, job_id: str, state: str, action: str) -> None:
        super().__init__(f"job {job_id} is {state}; cannot {action} it")
        self.state = state


def _require(job_id: str) -> Job:
    job = get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def _retry(job: Job, data: Mapping[str, Any] | None) -> Job:
    queue = get_queue(job.queue)
    if job.state not in RETRYABLE_STATES:
        raise JobStateConflict(job.id, job.state, "retry")
    if data is not None:
        queue.validate(data)
    hook = queue.policy.hook("on_manual_retry")
    if hook is not None:
        hook(job, dict(data) if data is not None else job.data)
    try:
        outcome = queue.retry(job.id, data)
    except RedisError as exc:
        raise QueueUnavailable(f"job store unreachable: {exc}") from exc
    if outcome != "waiting":
        raise JobStateConflict(job.id, outcome or "gone", "retry")
    return queue.get_job(job.id) or job


def retry_job(job_id: str, *, actor: str, data: Mapping[str, Any] | None = None) -> Job:
    """Run a failed, cancelled or expired job again, with new data if given (validated like the original)."""
    job = _retry(_require(job_id), data)
    audit(actor, "job.retry", job_id, queue=job.queue, newData=data is not None)
    return job


def retry_failed(queue_name: str, *, actor: str, limit: int = 10_000) -> int:
    """Retry every failed job of a queue; returns how many were retried."""
    queue = get_queue(queue_name)
    retried = 0
    for job in queue.store.get_many(queue.store.ids_in_state(queue_name, "failed", limit)):  # reads only
        if job is None:
            continue
        try:
            _retry(job, None)
            retried += 1
        except JobStateConflict:
            continue  # it moved on meanwhile
    audit(actor, "queue.retry_failed", queue_name, retried=retried)
    return retried


def delete_job(job_id: str, *, actor: str) -> None:
    """Remove a job that is not running."""
    job = _require(job_id)
    outcome = get_queue(job.queue).delete(job_id)
    if outcome is None:
        raise JobNotFound(job_id)
    if outcome == "active":
        raise JobStateConflict(job_id, "active", "delete")
    audit(actor, "job.delete", job_id, queue=job.queue, state=job.state)


def clean_queue(queue_name: str, *, actor: str, state: str, grace_ms: int, limit: int) -> list[str]:
    """Remove up to limit jobs that have been in state for longer than grace_ms."""
    if state not in CLEANABLE_STATES:
        raise ValueError(f"state must be one of {', '.join(CLEANABLE_STATES)}")
    removed = get_queue(queue_name).clean(state, grace_ms, limit)
    audit(actor, "queue.clean", queue_name, state=state, graceMs=grace_ms, limit=limit, removed=len(removed))
    return removed


def set_paused(queue_name: str, paused: bool, *, actor: str) -> None:
    """Pause (jobs wait, no worker takes them) or resume a queue."""
    queue = get_queue(queue_name)
    queue.pause() if paused else queue.resume()
    audit(actor, "queue.pause" if paused else "queue.resume", queue_name)


def queue_overview(queue_name: str) -> dict[str, Any]:
    """Counts, pause state, workers, recent throughput and processing times of one queue."""
    store = get_queue(queue_name).store
    activity = store.activity(queue_name)
    workers = queue_workers(queue_name)
    return {
        "name": queue_name,
        "counts": store.counts(queue_name),
        "paused": store.is_paused(queue_name),
        "workers": workers,
        "completedLastMinute": activity.completed_last_minute,
        "failedLastMinute": activity.failed_last_minute,
        "completedLastHour": activity.completed_last_hour,
        "failedLastHour": activity.failed_last_hour,
        "meanProcessingMs": activity.mean_ms,
        "p95ProcessingMs": activity.p95_ms,
    }


def find_jobs(
    queue_name: str,
    *,
    state: str | None = None,
    offset: int = 0,
    limit: int = 50,
    job_id: str | None = None,
    field: str | None = None,
    value: str | None = None,
) -> tuple[list[Job], int | None]:
    """A page of a queue's jobs, newest first, and the offset of the next page (or None).

    Search by job id, or by a field of the job data (field=value, compared as text).
    """
    store = get_queue(queue_name).store
    if job_id:
        job = store.get(job_id, queue_name)
        match = job is not None and (state is None or job.state == state)
        return ([job] if match else []), None
    states = [state] if state else list(STATES)
    if not field:
        jobs = store.list_jobs(queue_name, states, offset=offset, limit=limit + 1)
        more = len(jobs) > limit
        return jobs[:limit], (offset + limit if more else None)
    # A field search walks the newest jobs in bounded pages.
    found: list[Job] = []
    scanned, page = offset, 500
    while len(found) <= limit and scanned < offset + 20_000:
        batch = store.list_jobs(queue_name, states, offset=scanned, limit=page)
        if not batch:
            break
        for position, job in enumerate(batch):
            if str(job.data.get(field)) == value:
                found.append(job)
                if len(found) > limit:
                    return found[:limit], scanned + position
        scanned += len(batch)
    return found[:limit], None


# -- cancel, snooze, edit ---------------------------------------------------------

# The longest an operator may snooze a job: 30 days.
MAX_SNOOZE_MS = 30 * 24 * 3600 * 1000
CANCEL_REASON_CHARS = 500


def cancel_job(job_id: str, *, actor: str, reason: str) -> str:
    """Cancel a job: 'cancelled' (waiting or delayed: it never runs) or 'cancelling' (it runs:
    its next check point or its worker's cancel watch stops it). JobStateConflict once it is finished."""
    job = _require(job_id)
    reason = (reason or "cancelled")[:CANCEL_REASON_CHARS]
    try:
        outcome = get_queue(job.queue).cancel(job_id, reason)
    except RedisError as exc:
        raise QueueUnavailable(f"job store unreachable: {exc}") from exc
    except CancelRefused as exc:
        # The queue's domain refused (a payment already charged): nothing was changed.
        conflict = JobStateConflict(job_id, job.state, "cancel")
        conflict.args = (f"job {job_id} cannot be cancelled: {exc}",)
        raise conflict from exc
    if outcome is None:
        raise JobNotFound(job_id)
    # A job that already was cancelled reads 'cancelled' again: a conflict, not a second cancel.
    if outcome not in ("cancelled", "cancelling") or job.state == "cancelled":
        raise JobStateConflict(job_id, outcome, "cancel")
    audit(actor, "job.cancel", job_id, queue=job.queue, state=job.state, outcome=outcome, reason=reason)
    return outcome


def snooze_job(job_id: str, *, actor: str, delay_ms: int) -> Job:
    """Run a waiting or delayed job delay_ms from now instead; JobStateConflict once it runs or ran."""
    if not (isinstance(delay_ms, int) and 0 < delay_ms <= MAX_SNOOZE_MS):
        raise InvalidJobOptions({"delayMs": f"must be 1 to {MAX_SNOOZE_MS} ms"})
    job = _require(job_id)
    queue = get_queue(job.queue)
    outcome = queue.snooze(job_id, delay_ms)
    if outcome is None:
        raise JobNotFound(job_id)
    if outcome != "delayed":
        raise JobStateConflict(job_id, outcome, "snooze")
    audit(actor, "job.snooze", job_id, queue=job.queue, state=job.state, delayMs=delay_ms)
    return queue.get_job(job_id) or job


def edit_job_data(job_id: str, *, actor: str, data: Mapping[str, Any]) -> Job:
    """Replace the data of a job that is not running, validated by its queue's schema
    (InvalidJobData naming each field); JobStateConflict while it runs."""
    job = _require(job_id)
    queue = get_queue(job.queue)
    outcome = queue.update_data(job_id, data)
    if outcome is None:
        raise JobNotFound(job_id)
    if outcome == "active":
        raise JobStateConflict(job_id, outcome, "edit")
    changed = sorted(k for k in set(job.data) | set(data) if job.data.get(k) != data.get(k))
    # The field names only: values may be secrets (the audit log is read by viewers).
    audit(actor, "job.edit", job_id, queue=job.queue, state=outcome, fields=changed)
    return queue.get_job(job_id) or job


# -- search -------------------------------------------------------------------------

# Tag fields a free-text q is looked up in (besides each queue policy's own tag fields).
Q_TAG_FIELDS = ("owner", "rideId", "paymentId", "driverId", "riderId", "userId")
MAX_SEARCH_LIMIT = 500
# Search calls per stream and page: each looks at up to the store's budget of candidates.
SEARCH_CALLS_PER_STREAM = 8
SEARCH_ROUNDS = 4


class InvalidCursor(ValueError):
    """A search cursor this server did not hand out, or one for other filters."""


@dataclass(frozen=True)
class SearchFilters:
    """What search_jobs and bulk_action match: every given filter must hold."""

    queue: str | None = None
    state: str | None = None
    name: str | None = None
    owner: str | None = None
    ride_id: str | None = None
    payment_id: str | None = None
    q: str | None = None
    since: int | None = None  # creation time, ms
    until: int | None = None

    def tags(self) -> list[str]:
        pairs = (("owner", self.owner), ("rideId", self.ride_id), ("paymentId", self.payment_id))
        return [f"{field}:{value}" for field, value in pairs if value not in (None, "")]

    def streams(self, service: JobService) -> dict[str, tuple[str, list[str]]]:
        """The store searches this filter is the union of: key -> (queue, tags). One per queue;
        with q, one per queue and tag field q may be a value of."""
        queues = [self.queue] if self.queue else list(service.queues)
        streams: dict[str, tuple[str, list[str]]] = {}
        for name in queues:
            if not self.q:
                streams[name] = (name, self.tags())
                continue
            fields = dict.fromkeys([*Q_TAG_FIELDS, *service.queues[name].policy.tags])
            for field in fields:
                streams[f"{name}|{field}"] = (name, [*self.tags(), f"{field}:{self.q}"])
        return streams

    def fingerprint(self) -> str:
        """A short digest of the filters: a cursor carries it, so it only goes on the same search."""
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:16]

    def admits(self, job: Job) -> bool:
        """Whether job matches every filter but q (for the job q names by id)."""
        tags = set(job.tags)
        return (
            (self.queue is None or job.queue == self.queue)
            and (self.state is None or job.state == self.state)
            and (self.name is None or job.name == self.name)
            and (self.since is None or job.created_at >= self.since)
            and (self.until is None or job.created_at <= self.until)
            and all(tag in tags for tag in self.tags())
        )


def _encode_cursor(positions: Mapping[str, tuple[int, str] | None], skip: str | None, filters: SearchFilters) -> str:
    payload: dict[str, Any] = {
        "f": filters.fingerprint(),
        "p": {key: (list(pos) if pos else None) for key, pos in positions.items()},
    }
    if skip:
        payload["x"] = skip
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(
    cursor: str, streams: Mapping[str, Any], filters: SearchFilters
) -> tuple[dict[str, tuple[int, str] | None], str | None]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if payload["f"] != filters.fingerprint():
            raise InvalidCursor("the cursor belongs to other filters")
        positions: dict[str, tuple[int, str] | None] = {}
        for key, pos in payload["p"].items():
            if key not in streams:
                raise InvalidCursor("the cursor belongs to other filters")
            if pos is None:
                positions[key] = None
            else:
                score, job_id = pos
                if not (isinstance(score, int) and isinstance(job_id, str)):
                    raise InvalidCursor("not a cursor of this search")
                positions[key] = (score, job_id)
        skip = payload.get("x")
        if skip is not None and not isinstance(skip, str):
            raise InvalidCursor("not a cursor of this search")
        return positions, skip
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        if isinstance(exc, InvalidCursor):
            raise
        raise InvalidCursor("not a cursor of this search") from exc


def _search_ids(filters: SearchFilters, cursor: str | None, limit: int) -> tuple[list[tuple[str, str]], str | None]:
    """A page of (queue, id), newest first, merged from each stream's store search, and the next cursor.

    Each stream's search is exact (indexes, never a scan) but bounded per call, so a page
    takes only what every unfinished stream has already passed: nothing is skipped or shown twice.
    """
    service: JobService = current_app.extensions["jobs"]
    store = service.store
    streams = filters.streams(service)
    skip: str | None = None
    if cursor is None:
        positions: dict[str, tuple[int, str] | None] = dict.fromkeys(streams)
    else:
        positions, skip = _decode_cursor(cursor, streams, filters)
    page: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    if cursor is None and filters.q:
        job = get_job(filters.q)  # q names a job by its id
        if job is not None and filters.admits(job):
            page.append((job.queue, job.id))
            seen.add((job.queue, job.id))
            skip = job.id
    rounds = 0
    while positions and len(page) < limit and rounds < SEARCH_ROUNDS:
        rounds += 1
        want = limit - len(page)
        found: dict[str, list[tuple[int, str]]] = {}
        ends: dict[str, tuple[int, str] | None] = {}
        for key, position in positions.items():
            queue, tags = streams[key]
            items: list[tuple[int, str]] = []
            for _ in range(SEARCH_CALLS_PER_STREAM):
                batch, position = store.search(
                    queue,
                    tags=tags,
                    state=filters.state,
                    name=filters.name,
                    since=filters.since,
                    until=filters.until,
                    cursor=position,
                    limit=want - len(items),
                )
                items += batch
                if position is None or len(items) >= want:
                    break
            found[key], ends[key] = items, position
        # Safe down to the furthest point every unfinished stream has reached.
        frontier = max((end for end in ends.values() if end is not None), default=None)
        merged = sorted(
            ((score, job_id, key) for key, items in found.items() for score, job_id in items),
            reverse=True,
        )
        taken: dict[str, tuple[int, str]] = {}
        for score, job_id, key in merged:
            if frontier is not None and (score, job_id) < frontier:
                break
            queue = streams[key][0]
            if (queue, job_id) in seen or job_id == skip:
                taken[key] = (score, job_id)  # another stream's copy of a job on the page
                continue
            if len(page) >= limit:
                break
            taken[key] = (score, job_id)
            seen.add((queue, job_id))
            page.append((queue, job_id))
        for key in list(positions):
            items = found[key]
            if not items or taken.get(key) == items[-1]:
                # all it found is on the page: go on from where its search stopped
                if ends[key] is None:
                    del positions[key]
                else:
                    positions[key] = ends[key]
            elif key in taken:
                positions[key] = taken[key]
    next_cursor = _encode_cursor(positions, skip, filters) if positions else None
    return page, next_cursor


def search_jobs(
    *,
    queue: str | None = None,
    state: str | None = None,
    name: str | None = None,
    owner: str | None = None,
    ride_id: str | None = None,
    payment_id: str | None = None,
    q: str | None = None,
    since: int | None = None,
    until: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Job], str | None]:
    """Jobs of every queue (or one) matching every filter, newest first, from the store's search
    indexes; and an opaque cursor for the next page (None at the end; InvalidCursor if bad).

    q finds a job by its id, or by any tag value (owner, rideId, paymentId, driverId, ...).
    since and until bound the creation time (ms).
    """
    filters = SearchFilters(queue, state, name, owner, ride_id, payment_id, q, since, until)
    limit = max(1, min(limit, MAX_SEARCH_LIMIT))
    ids, next_cursor = _search_ids(filters, cursor, limit)
    return _load(ids), next_cursor


def _load(ids: list[tuple[str, str]]) -> list[Job]:
    store = current_app.extensions["jobs"].store
    by_queue: dict[str, list[str]] = {}
    for queue, job_id in ids:
        by_queue.setdefault(queue, []).append(job_id)
    loaded = {
        (queue, job.id): job
        for queue, job_ids in by_queue.items()
        for job in store.get_many(job_ids, queue)
        if job is not None
    }
    return [loaded[key] for key in ids if key in loaded]


# -- bulk actions ---------------------------------------------------------------------

BULK_ACTIONS = ("retry", "cancel", "delete")
BULK_LIMIT = 10_000
# The states each bulk action applies to; a matching job in another state is left alone.
BULK_STATES = {
    "retry": RETRYABLE_STATES,
    "cancel": (*PENDING, "active"),
    "delete": tuple(state for state in STATES if state != "active"),
}


# Pages one bulk action walks per state at most (each up to MAX_SEARCH_LIMIT jobs).
BULK_PAGES = 200


def _matching(filters: SearchFilters, states: tuple[str, ...], limit: int) -> Iterator[Job]:
    """Up to limit jobs matching filters whose state is one of states: one search per state."""
    yielded = 0
    for state in [filters.state] if filters.state else states:
        if state not in states:
            continue
        by_state = replace(filters, state=state)
        cursor: str | None = None
        for _ in range(BULK_PAGES):
            ids, cursor = _search_ids(by_state, cursor, MAX_SEARCH_LIMIT)
            for job in _load(ids):
                if job.state in states:
                    yield job
                    yielded += 1
                    if yielded >= limit:
                        return
            if cursor is None:
                break


def bulk_action(
    action: str,
    *,
    actor: str,
    dry_run: bool = False,
    limit: int = BULK_LIMIT,
    queue: str | None = None,
    state: str | None = None,
    name: str | None = None,
    owner: str | None = None,
    ride_id: str | None = None,
    payment_id: str | None = None,
    q: str | None = None,
    since: int | None = None,
    until: int | None = None,
) -> dict[str, int]:
    """Retry, cancel or delete every job matching the filters (up to limit, 10,000).

    matched: the matching jobs the action applies to (retry: failed, cancelled or expired;
    cancel: waiting, delayed or running; delete: any not running); done: how many it changed
    (a job that moved on meanwhile is left alone). dry_run counts and changes nothing.
    """
    if action not in BULK_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(BULK_ACTIONS)}")
    filters = SearchFilters(queue, state, name, owner, ride_id, payment_id, q, since, until)
    jobs = list(_matching(filters, BULK_STATES[action], max(1, min(limit, BULK_LIMIT))))
    if dry_run:
        return {"matched": len(jobs), "done": 0}
    done = 0
    for job in jobs:
        jobs_queue = get_queue(job.queue)
        try:
            if action == "retry":
                _retry(job, None)
                done += 1
            elif action == "cancel":
                done += jobs_queue.cancel(job.id, f"bulk cancel by {actor}") in ("cancelled", "cancelling")
            else:
                done += jobs_queue.delete(job.id) == "deleted"
        except JobStateConflict:
            continue  # it moved on meanwhile
        except RedisError as exc:
            raise QueueUnavailable(f"job store unreachable: {exc}") from exc
    shown = {k: v for k, v in filters.__dict__.items() if v is not None}
    audit(actor, f"jobs.bulk_{action}", queue or "*", filter=shown, matched=len(jobs), done=done)
    return {"matched": len(jobs), "done": done}


# -- health and history ---------------------------------------------------------------

SERIES_FIELDS = ("added", "completed", "failed", "cancelled", "expired")
MAX_HISTORY_MINUTES = 72 * 60


def queue_workers(queue_name: str) -> list[dict[str, Any]]:
    """The live workers (heartbeat in the last 30 s) that consume a queue."""
    store = get_queue(queue_name).store
    return [
        {"name": name, "pid": info.get("pid"), "concurrency": info.get("concurrency"), "lastSeen": info.get("lastSeen")}
        for name, info in sorted(store.workers().items())
        if queue_name in info.get("queues", [])
    ]


def queue_health(queue_name: str, minutes: int = 60) -> dict[str, Any]:
    """A queue's health over the last minutes (at most 72 h): counts; per-minute added, completed,
    failed, cancelled and expired; wait and processing p50/p95; the oldest waiting job's age;
    live workers; and a warning when jobs wait and no worker consumes the queue."""
    store = get_queue(queue_name).store
    minutes = max(1, min(minutes, MAX_HISTORY_MINUTES))
    buckets = store.history(queue_name, minutes)
    counts = store.counts(queue_name)
    workers = queue_workers(queue_name)
    wait = percentiles(buckets, "w", (0.5, 0.95))
    processing = percentiles(buckets, "p", (0.5, 0.95))
    backlog = counts["waiting"] + counts["paused"]
    warning = None
    if backlog and not workers:
        warning = f"{backlog} jobs wait and no live worker consumes {queue_name}"
    return {
        "name": queue_name,
        "minutes": minutes,
        "counts": counts,
        "paused": store.is_paused(queue_name),
        "series": [
            {"minute": int(bucket["minute"]), **{f: int(bucket.get(f, 0)) for f in SERIES_FIELDS}} for bucket in buckets
        ],
        "totals": {f: int(sum(bucket.get(f, 0) for bucket in buckets)) for f in SERIES_FIELDS},
        "waitMs": {"p50": wait[0.5], "p95": wait[0.95]},
        "processingMs": {"p50": processing[0.5], "p95": processing[0.95]},
        "oldestWaitingMs": store.oldest_waiting_ms(queue_name),
        "workers": workers,
        "warning": warning,
    }


def job_events(job: Job, scan: int = 2_000) -> list[dict[str, Any]]:
    """The job's events among its queue's newest scan events, oldest first: {at, event, state, ...}."""
    store = get_queue(job.queue).store
    entries = store.redis.xrevrange(store.keys.queue(job.queue, "events"), count=scan)
    return [
        {"at": int(event_id.split("-")[0]), "eventId": event_id, **fields}
        for event_id, fields in reversed(entries)
        if fields.get("id") == job.id
    ]


def job_logs(job: Job) -> list[dict[str, Any]]:
    """The job's log lines, oldest first: {attempt, at, line}."""
    return get_queue(job.queue).store.logs(job.id, job.queue)
