"""What GET /jobs/<id> returns."""

import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, fields, validate

from jobqueue.masking import mask, mask_email

# An email address inside a line of text (mask() masks a value that is one address).
EMAIL_IN_TEXT = re.compile(r"[^@\s<>()\[\]:;,\"']{1,64}@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# The longest an event stream stays open (s); EVENT_STREAM_MAX_SECONDS may cap it lower.
MAX_STREAM_SECONDS = 300
# The ids event streams send, which EventSource sends back as Last-Event-ID: a Redis stream
# id for one job's stream; 'queue:id,queue:id' for the queues' stream (/admin/events).
STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
_POSITION = r"[a-z][a-z0-9_]{0,39}:[0-9]{1,20}-[0-9]{1,20}"
QUEUE_POSITIONS = re.compile(rf"^{_POSITION}(,{_POSITION}){{0,15}}$")


def ms_to_iso(value: int | None) -> str | None:
    """A BullMQ millisecond timestamp as ISO 8601 UTC."""
    if not value:
        return None
    return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds")


class JobSchema(Schema):
    id = fields.String(metadata={"description": "Job id"})
    queue = fields.String(metadata={"description": "email, analytics or payment"})
    name = fields.String(metadata={"description": "The Celery task that runs the job"})
    state = fields.String(metadata={"description": "waiting, delayed, active, completed, failed, cancelled or expired"})
    attempts = fields.Integer(metadata={"description": "Attempts started so far"})
    result = fields.Raw(allow_none=True, metadata={"description": "The return value, once completed"})
    failedReason = fields.String(allow_none=True, attribute="failed_reason")
    progress = fields.Function(
        lambda job: mask(job.progress),
        metadata={"description": "The job's last reported progress (a number or an object), sensitive fields masked"},
    )
    cancelReason = fields.String(allow_none=True, attribute="cancel_reason", metadata={"description": "Once cancelled"})
    createdAt = fields.Method("_created_at", metadata={"description": "ISO 8601, UTC"})
    processedAt = fields.Method("_processed_on", metadata={"description": "Start of the last attempt"})
    finishedAt = fields.Method("_finished_at", metadata={"description": "ISO 8601, UTC"})

    def _created_at(self, job: Any) -> str | None:
        return ms_to_iso(job.created_at)

    def _processed_on(self, job: Any) -> str | None:
        return ms_to_iso(job.processed_on)

    def _finished_at(self, job: Any) -> str | None:
        return ms_to_iso(job.finished_at)


class JobAcceptedSchema(Schema):
    message = fields.String()
    jobId = fields.String(metadata={"description": "Poll GET /jobs/<jobId> for its state"})


def mask_text(line: str) -> str:
    """A log line with the email addresses in it partly hidden (r***@example.com)."""
    return EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), line)


def masked_logs(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log entries ({attempt, at, line}) as shown to people: secrets masked, addresses partly hidden."""
    return [{**mask(entry), "line": mask_text(str(entry.get("line", "")))} for entry in entries]


class LogLineSchema(Schema):
    attempt = fields.Integer(metadata={"description": "The attempt that wrote it"})
    at = fields.Integer(metadata={"description": "ms since the epoch"})
    line = fields.String(metadata={"description": "Email addresses partly hidden"})


class JobChildSchema(Schema):
    id = fields.String(metadata={"description": "The child job's id"})
    queue = fields.String()
    state = fields.String(metadata={"description": "As it ended (told to its parent), else its state now"})
    policy = fields.String(
        metadata={"description": "What its parent does if it fails: fail_parent, ignore or continue_parent"}
    )


class JobStatusSchema(JobSchema):
    """GET /jobs/<id>: the job with its log, for its owner and admins."""

    expiresAt = fields.Method("_expires_at", metadata={"description": "Not started by then, it ends expired"})
    logs = fields.List(fields.Nested(LogLineSchema), metadata={"description": "Log lines of every attempt, masked"})
    children = fields.List(
        fields.Nested(JobChildSchema),
        metadata={"description": "A flow parent's children (jobqueue.flows), by id; empty for other jobs"},
    )

    def _expires_at(self, job: Any) -> str | None:
        return ms_to_iso(job.expires_at)


def last_event_id(pattern: re.Pattern[str]) -> fields.String:
    return fields.String(
        data_key="Last-Event-ID",
        validate=validate.Regexp(pattern, error="not an id this stream sent"),
        metadata={"description": "Resume after this message (EventSource sends it when it reconnects)"},
    )


class JobStreamHeadersSchema(Schema):
    last_event_id = last_event_id(STREAM_ID)


class QueueStreamHeadersSchema(Schema):
    last_event_id = last_event_id(QUEUE_POSITIONS)


class EventStreamArgsSchema(Schema):
    timeout = fields.Integer(
        load_default=60,
        validate=validate.Range(min=1, max=MAX_STREAM_SECONDS),
        metadata={"description": "Close the stream after this many seconds (the server may cap it lower)"},
    )
