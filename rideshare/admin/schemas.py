"""Admin API bodies."""

from marshmallow import Schema, fields, validate

from jobqueue.masking import mask
from jobqueue.store import STATES
from rideshare.jobs.control import CLEANABLE_STATES
from rideshare.jobs.schemas import JobSchema
from rideshare.validation import MAX_ID

MAX_GRACE_MS = 10 * 365 * 24 * 3600 * 1000


class JobCountsSchema(Schema):
    waiting = fields.Integer()
    delayed = fields.Integer()
    active = fields.Integer()
    completed = fields.Integer()
    failed = fields.Integer()
    paused = fields.Integer()


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


class JobDetailSchema(JobSchema):
    data = fields.Function(
        lambda detail: mask(detail.job.data), metadata={"description": "Job data, sensitive fields masked"}
    )
    opts = fields.Raw(metadata={"description": "Job options"})
    owner = fields.String(allow_none=True)
    worker = fields.String(allow_none=True)
    attemptLog = fields.List(fields.Nested(AttemptSchema), attribute="attempt_log")


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
