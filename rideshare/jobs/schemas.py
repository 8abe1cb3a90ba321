"""What GET /jobs/<id> returns."""

from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, fields


def ms_to_iso(value: int | None) -> str | None:
    """A BullMQ millisecond timestamp as ISO 8601 UTC."""
    if not value:
        return None
    return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds")


class JobSchema(Schema):
    id = fields.String(metadata={"description": "Job id"})
    queue = fields.String(metadata={"description": "email, analytics or payment"})
    name = fields.String(metadata={"description": "The Celery task that runs the job"})
    state = fields.String(metadata={"description": "waiting, delayed, active, completed or failed"})
    attempts = fields.Integer(metadata={"description": "Attempts started so far"})
    result = fields.Raw(allow_none=True, metadata={"description": "The return value, once completed"})
    failedReason = fields.String(allow_none=True, attribute="failed_reason")
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
