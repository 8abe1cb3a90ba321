"""Live job events as Server-Sent Events: one job's (GET /jobs/<id>/events) or whole queues'
(GET /admin/events), and the CLI's `jobs events`.

Every event comes from the queues' Redis streams (JobStore.read_events, XREAD BLOCK), never
from polling the store. A stream holds one server thread while it is open (gunicorn's
gthread workers: Procfile --threads 4), so each is bounded twice: in time (timeout, at most
EVENT_STREAM_MAX_SECONDS) and in number (EVENT_STREAMS_MAX open at once per process; one
more gets 503), which leaves threads for the rest of the API.
"""

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flask import Flask, Response, current_app, stream_with_context

from jobqueue import Job, JobStore
from jobqueue.lifecycle import FINISHED
from jobqueue.masking import mask
from jobqueue.store import to_json
from rideshare.jobs.schemas import MAX_STREAM_SECONDS, QUEUE_POSITIONS, mask_text

# One XREAD BLOCK at most this long (under the store client's 10 s socket timeout); a
# comment line goes out after each idle one, so a closed connection is noticed.
BLOCK_MS = 5_000
ENDING_STATES = (*FINISHED, "removed")
QUEUE_POSITION = re.compile(r"^([a-z][a-z0-9_]{0,39}):([0-9]{1,20}-[0-9]{1,20})$")
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
# The OpenAPI answers of a stream route.
EVENT_STREAM_DOC = {
    "description": "Server-Sent Events (text/event-stream): 'state' (first the current state, then each move), "
    "'progress' and 'log' messages, each with an id for Last-Event-ID; an 'end' message, then the stream closes",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
TOO_MANY_STREAMS_DOC = {"description": "Too many event streams are open in this process; try again (Retry-After)"}
Event = tuple[str, str, dict[str, str]]


class TooManyStreams(RuntimeError):
    """EVENT_STREAMS_MAX streams are open in this process already."""


def _slots(app: Flask) -> threading.BoundedSemaphore:
    slots = app.extensions.get("event_stream_slots")
    if slots is None:
        slots = app.extensions.setdefault(
            "event_stream_slots", threading.BoundedSemaphore(int(app.config.get("EVENT_STREAMS_MAX", 4)))
        )
    return slots


def stream_seconds(asked: int) -> float:
    """How long a stream asked to last asked seconds may stay open."""
    cap = float(current_app.config.get("EVENT_STREAM_MAX_SECONDS", MAX_STREAM_SECONDS))
    return max(0.0, min(float(asked), cap))


def sse(body: Iterator[str]) -> Response:
    """A text/event-stream response of body, holding one of the process's stream slots until it closes.

    Raises TooManyStreams when none is free.
    """
    slots = _slots(current_app._get_current_object())  # type: ignore[attr-defined]
    if not slots.acquire(blocking=False):
        raise TooManyStreams("too many event streams are open; try again shortly")
    released = threading.Lock()

    def release() -> None:
        if released.acquire(blocking=False):
            slots.release()

    def guarded() -> Iterator[str]:
        try:
            yield from body
        finally:
            release()  # at the stream's end, even when the server does not close the response

    try:
        response = Response(stream_with_context(guarded()), mimetype="text/event-stream", headers=SSE_HEADERS)
    except BaseException:
        release()
        raise
    response.call_on_close(release)  # a response closed before its first message
    return response


def frame(kind: str, data: Mapping[str, Any], event_id: str | None = None) -> str:
    """One SSE message."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def payload(queue: str, event_id: str, fields: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """An event of a queue's stream as people see it: (SSE type, data), progress and log lines masked.

    Types: 'progress', 'log', and 'state' for every move (data.event names it: fetch,
    complete, fail, retry, cancel, ...) and for 'cancelling' and 'updated'.
    """
    data: dict[str, Any] = {
        "jobId": fields.get("id"),
        "queue": queue,
        "event": fields.get("event"),
        "state": fields.get("state"),
        "at": int(event_id.split("-", 1)[0]),
    }
    kind = "state"
    if "progress" in fields:
        kind = "progress"
        data["progress"] = mask(_json(fields["progress"]))
    if "log" in fields:
        kind = "log"
        entry = _json(fields["log"])
        data["log"] = {**mask(entry), "line": mask_text(str(entry.get("line", "")))} if isinstance(entry, dict) else {}
    return kind, data


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def follow(
    store: JobStore, after: dict[str, str], until: float, match: Callable[[str, Mapping[str, str]], bool]
) -> Iterator[Event | None]:
    """The events of after's queues past after's ids that match, as they come, until the
    monotonic time until; None after each idle wait (for a keep-alive). after is kept current."""
    while (left := until - time.monotonic()) > 0:
        events = store.read_events(after, block_ms=max(1, int(min(left * 1000, BLOCK_MS))))
        if not events:
            yield None
            continue
        for queue, event_id, fields in events:
            after[queue] = event_id
            if match(queue, fields):
                yield queue, event_id, fields


def snapshot(job: Job) -> dict[str, Any]:
    """A job's current state, as the first message of its stream."""
    return {
        "jobId": job.id,
        "queue": job.queue,
        "event": "snapshot",
        "state": job.state,
        "attempts": job.attempts,
        "progress": mask(job.progress),
        "cancelReason": job.cancel_reason,
        "failedReason": job.failed_reason,
    }


def job_stream(store: JobStore, job: Job, last_id: str | None, seconds: float) -> Iterator[str]:
    """One job's events: first its current state (unless resuming after last_id), then each of
    its moves, progress and log lines as they happen; ends when it finishes or after seconds."""
    until = time.monotonic() + seconds
    # The stream's position first, then the state: an event between the two is read, not lost.
    after = {job.queue: last_id or store.last_event_id(job.queue)}
    yield "retry: 1000\n\n"
    current = store.get(job.id, job.queue)
    if current is None:
        yield frame("end", {"jobId": job.id, "reason": "removed"})
        return
    if last_id is None or current.state in FINISHED:
        yield frame("state", snapshot(current), after[job.queue])
        if current.state in FINISHED:
            yield frame("end", {"jobId": job.id, "reason": "finished", "state": current.state})
            return
    for item in follow(store, after, until, lambda _, fields: fields.get("id") == job.id):
        if item is None:
            yield ": keep-alive\n\n"
            continue
        queue, event_id, fields = item
        kind, data = payload(queue, event_id, fields)
        yield frame(kind, data, event_id)
        if kind == "state" and data["state"] in ENDING_STATES:
            yield frame("end", {"jobId": job.id, "reason": "finished", "state": data["state"]})
            return
    yield frame("end", {"jobId": job.id, "reason": "timeout"})


def parse_positions(header: str | None, queues: list[str]) -> dict[str, str] | None:
    """A Last-Event-ID of /admin/events ('email:1-0,payment:5-2') as {queue: id} for queues;
    None if absent; ValueError if malformed."""
    if not header:
        return None
    if not QUEUE_POSITIONS.match(header):
        raise ValueError("Last-Event-ID is not an id this stream sent")
    positions: dict[str, str] = {}
    for part in header.split(","):
        match = QUEUE_POSITION.match(part)
        if not match:
            raise ValueError("Last-Event-ID is not an id this stream sent")
        positions[match.group(1)] = match.group(2)
    return {queue: positions[queue] for queue in queues if queue in positions} or None


def queue_position(after: Mapping[str, str]) -> str:
    return ",".join(f"{queue}:{event_id}" for queue, event_id in after.items())


def queue_stream(store: JobStore, queues: list[str], positions: dict[str, str] | None, seconds: float) -> Iterator[str]:
    """Every event of queues, as they happen, for seconds; first each queue's counts (when not resuming)."""
    until = time.monotonic() + seconds
    after = {queue: store.last_event_id(queue) for queue in queues}
    after.update(positions or {})
    yield "retry: 1000\n\n"
    if positions is None:
        yield frame("counts", {queue: store.counts(queue) for queue in queues}, queue_position(after))
    for item in follow(store, after, until, lambda *_: True):
        if item is None:
            yield ": keep-alive\n\n"
            continue
        queue, event_id, fields = item
        kind, data = payload(queue, event_id, fields)
        yield frame(kind, data, queue_position(after))
    yield frame("end", {"reason": "timeout"})


def to_text(queue: str, event_id: str, fields: Mapping[str, str]) -> str:
    """One event as a line of text (the CLI's `jobs events`)."""
    kind, data = payload(queue, event_id, fields)
    at = time.strftime("%H:%M:%S", time.localtime(data["at"] / 1000))
    extra = ""
    if kind == "progress":
        extra = " " + to_json(data["progress"])
    elif kind == "log":
        extra = " " + str(data["log"].get("line", ""))
    return f"{at} {queue:<9} {data['jobId']} {data['event']} -> {data['state']}{extra}"
