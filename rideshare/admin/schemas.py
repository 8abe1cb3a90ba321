"""Admin API bodies."""

import re
from datetime import UTC
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from jobqueue.limits import MAX_CONCURRENCY, MAX_RATE, MAX_WINDOW_MS, Rate
from jobqueue.masking import mask
from jobqueue.store import STATES
from rideshare.jobs.control import (
    BULK_ACTIONS,
    CANCEL_REASON_CHARS,
    CLEANABLE_STATES,
    MAX_HISTORY_MINUTES,
    MAX_SEARCH_LIMIT,
    MAX_SNOOZE_MS,
)
from rideshare.jobs.flow import MAX_THROTTLE_MS
from rideshare.jobs.schemas import EventStreamArgsSchema, JobSchema, LogLineSchema, ms_to_iso
from rideshare.queues import QUEUES
from rideshare.validation import MAX_ID

MAX_GRACE_MS = 10 * 365 * 24 * 3600 * 1000


class JobCountsSchema(Schema):
    waiting = fields.Integer()
    delayed = fields.Integer()
    active = fields.Integer()
    completed = fields.Integer()
    failed = fields.Integer()
    cancelled = fields.Integer()
    expired = fields.Integer()
    paused = fields.Integer()
    grouped = fields.Integer(metadata={"description": "Ready, but held behind their group's earlier jobs"})


class WorkerSchema(Schema):
    name = fields.String()
    pid = fields.Integer(allow_none=True)
    concurrency = fields.Integer(allow_none=True)
    lastSeen = fields.Integer(metadata={"description": "Last heartbeat, ms since the epoch"})


class QueueOverviewSchema(Schema):
    name = fields.String()
    counts = fields.Nested(JobCountsSchema)
    paused = fields.Boolean()
    workers = fields.List(fields.Nested(WorkerSchema))
    completedLastMinute = fields.Integer()
    failedLastMinute = fields.Integer()
    completedLastHour = fields.Integer()
    failedLastHour = fields.Integer()
    meanProcessingMs = fields.Float(allow_none=True)
    p95ProcessingMs = fields.Float(allow_none=True)


class QueuesSchema(Schema):
    queues = fields.List(fields.Nested(QueueOverviewSchema))


class JobListArgsSchema(Schema):
    state = fields.String(validate=validate.OneOf(STATES))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_ID))
    jobId = fields.String(validate=validate.Length(max=64), metadata={"description": "Find one job by id"})
    field = fields.String(
        validate=validate.Length(max=64),
        metadata={"description": "A field of the job data; field and value go together (422 if only one is given)"},
    )
    value = fields.String(
        validate=validate.Length(max=256),
        metadata={"description": "Its value, as text; field and value go together (422 if only one is given)"},
    )


class AttemptSchema(Schema):
    attempt = fields.Integer()
    startedAt = fields.Integer(allow_none=True)
    finishedAt = fields.Integer(allow_none=True)
    durationMs = fields.Float(allow_none=True)
    worker = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    traceback = fields.String(allow_none=True)


class JobEventSchema(Schema):
    eventId = fields.String(metadata={"description": "The event's id in its queue's stream"})
    at = fields.Integer(metadata={"description": "ms since the epoch"})
    event = fields.String(metadata={"description": "add, fetch, complete, fail, retry, cancel, progress, log, ..."})
    state = fields.String(metadata={"description": "The job's state after it"})
    progress = fields.Raw(metadata={"description": "A progress event's value, masked"})
    log = fields.Raw(metadata={"description": "A log event's line, masked"})


class JobDetailSchema(JobSchema):
    data = fields.Function(
        lambda detail: mask(detail.job.data), metadata={"description": "Job data, sensitive fields masked"}
    )
    opts = fields.Raw(metadata={"description": "Job options"})
    owner = fields.String(allow_none=True)
    worker = fields.String(allow_none=True)
    attemptLog = fields.List(fields.Nested(AttemptSchema), attribute="attempt_log")
    logs = fields.List(fields.Nested(LogLineSchema), metadata={"description": "Log lines of every attempt, masked"})
    cancelRequested = fields.String(
        allow_none=True, attribute="cancel_requested", metadata={"description": "A cancel asked while it runs"}
    )
    expiresAt = fields.Function(
        lambda detail: ms_to_iso(detail.expires_at), metadata={"description": "Not started by then, it ends expired"}
    )
    snoozes = fields.Integer(metadata={"description": "Times it snoozed"})
    tags = fields.List(fields.String(), metadata={"description": "'field:value' it is found by in search"})
    events = fields.List(
        fields.Nested(JobEventSchema), metadata={"description": "Its recent events (its queue's newest 2,000)"}
    )


class JobPageSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    nextCursor = fields.Integer(allow_none=True, metadata={"description": "Pass as cursor for the next page"})


class RetryBodySchema(Schema):
    data = fields.Dict(metadata={"description": "Corrected job data, validated like the original"})


class RetriedSchema(Schema):
    message = fields.String()
    retried = fields.Integer()


class CleanBodySchema(Schema):
    state = fields.String(required=True, validate=validate.OneOf(CLEANABLE_STATES))
    # strict: a JSON number with a fraction (2.589e-42) is refused, not truncated to an integer.
    graceMs = fields.Integer(
        load_default=0,
        strict=True,
        validate=validate.Range(min=0, max=MAX_GRACE_MS),
        metadata={"description": "Only jobs finished at least this long ago (ms); at most 10 years"},
    )
    limit = fields.Integer(load_default=1000, strict=True, validate=validate.Range(min=1, max=100_000))


class CleanedSchema(Schema):
    removed = fields.List(fields.String())
    count = fields.Integer()


class AuditEntrySchema(Schema):
    id = fields.Integer()
    actor = fields.String()
    action = fields.String()
    target = fields.String()
    details = fields.Raw()
    at = fields.DateTime()


class AuditPageSchema(Schema):
    entries = fields.List(fields.Nested(AuditEntrySchema))


class AuditArgsSchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    # Audit ids are 32-bit SQL integers: a larger one would overflow in the query (a 500), so it is a 422.
    before = fields.Integer(
        validate=validate.Range(min=1, max=MAX_ID), metadata={"description": "Only entries with a smaller id"}
    )


class SearchFilterSchema(Schema):
    """What a search or a bulk action matches: every given filter must hold."""

    queue = fields.String(validate=validate.OneOf(QUEUES))
    state = fields.String(validate=validate.OneOf(STATES))
    name = fields.String(validate=validate.Length(min=1, max=100), metadata={"description": "The task's name"})
    owner = fields.String(validate=validate.Length(min=1, max=100), metadata={"description": "The user who added it"})
    rideId = fields.String(validate=validate.Length(min=1, max=100), metadata={"description": "Tagged ride id"})
    paymentId = fields.String(validate=validate.Length(min=1, max=100), metadata={"description": "Tagged payment id"})
    q = fields.String(
        validate=validate.Length(min=1, max=100),
        metadata={"description": "A job id, or any tagged value (owner, rideId, paymentId, driverId, riderId, userId)"},
    )
    since = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "Created at or after (ISO 8601; UTC unless it says)"}
    )
    until = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "Created at or before (ISO 8601; UTC unless it says)"}
    )


class JobSearchArgsSchema(SearchFilterSchema):
    cursor = fields.String(
        validate=validate.Length(min=1, max=4000),
        metadata={"description": "nextCursor of the page before, with the same filters"},
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_SEARCH_LIMIT))


class JobSearchPageSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    nextCursor = fields.String(
        allow_none=True, metadata={"description": "Pass as cursor for the next page; null at the end"}
    )


class CancelBodySchema(Schema):
    reason = fields.String(
        load_default="cancelled by an operator",
        validate=validate.Length(min=1, max=CANCEL_REASON_CHARS),
        metadata={"description": "Why; shown with the cancelled job"},
    )


class SnoozeBodySchema(Schema):
    delayMs = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=1, max=MAX_SNOOZE_MS),
        metadata={"description": "Run it this many ms from now instead (at most 30 days)"},
    )


class EditDataBodySchema(Schema):
    data = fields.Dict(required=True, metadata={"description": "The new job data, validated by its queue's schema"})


class BulkBodySchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(BULK_ACTIONS))
    filter = fields.Nested(SearchFilterSchema, load_default=dict, metadata={"description": "Jobs to act on"})
    dryRun = fields.Boolean(load_default=False, metadata={"description": "Count the matching jobs; change nothing"})


class BulkResultSchema(Schema):
    action = fields.String()
    dryRun = fields.Boolean()
    matched = fields.Integer(
        metadata={"description": "Matching jobs the action applies to (at most 10,000): the count to confirm"}
    )
    done = fields.Integer(metadata={"description": "Jobs it changed (0 on a dry run)"})


class HistoryArgsSchema(Schema):
    minutes = fields.Integer(load_default=60, validate=validate.Range(min=1, max=MAX_HISTORY_MINUTES))


class MinuteSchema(Schema):
    minute = fields.Integer(metadata={"description": "The minute's start, ms since the epoch"})
    added = fields.Integer()
    completed = fields.Integer()
    failed = fields.Integer()
    cancelled = fields.Integer()
    expired = fields.Integer()


class SeriesTotalsSchema(Schema):
    added = fields.Integer()
    completed = fields.Integer()
    failed = fields.Integer()
    cancelled = fields.Integer()
    expired = fields.Integer()


class QuantilesSchema(Schema):
    p50 = fields.Float(allow_none=True)
    p95 = fields.Float(allow_none=True)


class QueueHealthSchema(Schema):
    name = fields.String()
    minutes = fields.Integer()
    counts = fields.Nested(JobCountsSchema)
    paused = fields.Boolean()
    series = fields.List(fields.Nested(MinuteSchema), metadata={"description": "Per minute, oldest first"})
    totals = fields.Nested(SeriesTotalsSchema)
    waitMs = fields.Nested(QuantilesSchema, metadata={"description": "From added (or due) to started"})
    processingMs = fields.Nested(QuantilesSchema)
    oldestWaitingMs = fields.Integer(allow_none=True, metadata={"description": "Age of the oldest waiting job"})
    workers = fields.List(fields.Nested(WorkerSchema), metadata={"description": "Live workers of the queue"})
    warning = fields.String(allow_none=True, metadata={"description": "Set when jobs wait and no worker is live"})


class QueueEventsArgsSchema(EventStreamArgsSchema):
    queue = fields.String(validate=validate.OneOf(QUEUES), metadata={"description": "One queue; all when absent"})


# -- flow control (issue 15) -------------------------------------------------------------

# A rate as text: jobs / window, within the engine's bounds (jobqueue.limits.Rate.parse takes
# more spellings; this is the part whose every match it accepts, so the document is exact).
RATE_TEXT = re.compile(
    r"^ *[1-9][0-9]{0,5} */ *(([1-9][0-9]{0,6})?ms|([1-9][0-9]{0,3})?(s|sec)|([1-9][0-9]{0,2})?(m|min)"
    r"|([1-9]|1[0-9]|2[0-4])?h) *$"
)
RATE_OBJECT = {
    "type": "object",
    "properties": {
        "max": {"type": "integer", "minimum": 1, "maximum": MAX_RATE, "description": "Jobs per window"},
        "perMs": {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW_MS, "description": "The window, in ms"},
    },
    "required": ["max", "perMs"],
    "additionalProperties": False,
}


def _rate(value: Any) -> None:
    if isinstance(value, str) and not RATE_TEXT.search(value):
        raise ValidationError("must be like 25/s, 600/min or 10/500ms")
    try:
        Rate.parse(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def rate_field(description: str) -> fields.Raw:
    """A rate limit: {"max": 25, "perMs": 1000}, text like "25/s", or null for none."""
    return fields.Raw(
        allow_none=True,
        validate=_rate,
        metadata={
            "description": f'{description}: {{"max": jobs, "perMs": window}}, text like "25/s", or null for none',
            "oneOf": [RATE_OBJECT, {"type": "string", "pattern": RATE_TEXT.pattern}],
        },
    )


def concurrency_field(description: str, **kwargs: Any) -> fields.Integer:
    return fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_CONCURRENCY),
        metadata={"description": description},
        **kwargs,
    )


class GroupDefaultsBodySchema(Schema):
    class Meta:
        unknown = RAISE

    concurrency = concurrency_field("Jobs of one group that may run at once (1: one at a time, in order)")
    rate = rate_field("Jobs of one group per window")


class LimitsBodySchema(Schema):
    """PUT /admin/queues/<queue>/limits: a field given replaces, null removes, a field left out stays."""

    class Meta:
        unknown = RAISE

    rate = rate_field("Jobs of the queue that may start per window, across every worker")
    concurrency = concurrency_field(
        "Jobs of the queue running at once, across every worker; null: no limit", allow_none=True
    )
    group = fields.Nested(
        GroupDefaultsBodySchema,
        metadata={"description": "What each group may do, unless it has its own"},
    )


class GroupLimitsBodySchema(Schema):
    """PUT /admin/queues/<queue>/groups/<group>/limits: the group's own; null or left out: the queue's."""

    class Meta:
        unknown = RAISE

    concurrency = concurrency_field(
        "This group's jobs running at once; null: the queue's group default", allow_none=True
    )
    rate = rate_field("This group's jobs per window")


class ThrottleBodySchema(Schema):
    ms = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=MAX_THROTTLE_MS),
        metadata={"description": "Take no job of the queue for this long (ms, at most 1 hour); 0 lifts a throttle"},
    )


class RateSchema(Schema):
    max = fields.Integer(metadata={"description": "Jobs per window"})
    perMs = fields.Integer(metadata={"description": "The window, in ms"})


class GroupDefaultsSchema(Schema):
    concurrency = fields.Integer(metadata={"description": "Jobs of one group running at once"})
    rate = fields.Nested(RateSchema, allow_none=True)


class LimitsSchema(Schema):
    rate = fields.Nested(RateSchema, allow_none=True, metadata={"description": "null: no rate limit"})
    concurrency = fields.Integer(allow_none=True, metadata={"description": "null: no concurrency limit"})
    group = fields.Nested(GroupDefaultsSchema)


class GroupBacklogSchema(Schema):
    group = fields.String()
    backlog = fields.Integer(metadata={"description": "Its jobs held back (grouped)"})
    running = fields.Integer(metadata={"description": "Its jobs running now"})


class FlowStatusSchema(Schema):
    queue = fields.String()
    limits = fields.Nested(LimitsSchema)
    setBy = fields.String(
        allow_none=True,
        metadata={"description": "admin: set at run time, kept over restarts; env: from the environment"},
    )
    active = fields.Integer(metadata={"description": "Jobs running now"})
    rateUsed = fields.Integer(allow_none=True, metadata={"description": "Rate slots held in the current window"})
    throttledMs = fields.Integer(metadata={"description": "How long the queue takes no job yet (0: not throttled)"})
    limited = fields.Boolean(metadata={"description": "A limit holds the queue's waiting jobs back now"})
    limitedBy = fields.List(fields.String(), metadata={"description": "throttle, concurrency, rate"})
    waitingOnLimit = fields.Integer(metadata={"description": "Waiting jobs a limit holds back now"})
    grouped = fields.Integer(metadata={"description": "Jobs held behind their group's earlier jobs"})
    groupCount = fields.Integer(metadata={"description": "Groups with jobs held back"})
    groups = fields.List(fields.Nested(GroupBacklogSchema), metadata={"description": "Largest backlogs first"})


class GroupLimitsSchema(Schema):
    concurrency = fields.Integer(allow_none=True)
    rate = fields.Nested(RateSchema, allow_none=True)


class GroupLimitsStatusSchema(Schema):
    queue = fields.String()
    group = fields.String()
    limits = fields.Nested(GroupLimitsSchema, metadata={"description": "The group's own; null: the queue's default"})
    applies = fields.Nested(GroupLimitsSchema, metadata={"description": "What applies to the group now"})
