"""GET /jobs/<id>: a job's state, attempts, progress, log, result and a flow parent's children;
GET /jobs/<id>/events: its live events."""

from dataclasses import dataclass
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from marshmallow import RAISE

from jobqueue import Job
from rideshare.auth import current_user, login_required
from rideshare.jobs import get_job, get_queue
from rideshare.jobs.events import (
    EVENT_STREAM_DOC,
    TOO_MANY_STREAMS_DOC,
    TooManyStreams,
    job_stream,
    sse,
    stream_seconds,
)
from rideshare.jobs.schemas import EventStreamArgsSchema, JobStatusSchema, JobStreamHeadersSchema, masked_logs

blp = Blueprint("jobs", __name__, description="Job state by id")


@dataclass
class JobStatus:
    """A job with its log lines, as GET /jobs/<id> shows it."""

    job: Job
    logs: list[dict[str, Any]]
    children: list[dict[str, Any]]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)


def own_job(job_id: str) -> Job:
    """The caller's job (any job for an admin); 404 otherwise."""
    job = get_job(job_id)
    user = current_user()
    # Another user's job reads as missing: its existence is not theirs to learn.
    if job is None or not (user.is_admin or job.owner == user.id):
        abort(404, message=f"job {job_id} not found")
    return job


@blp.route("/jobs/<string:job_id>")
class JobResource(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.response(200, JobStatusSchema)
    def get(self, job_id: str) -> JobStatus:
        """A job's state, attempts, progress, log, result and failure or cancel reason; for a flow's
        parent, its children (id, queue, state)."""
        job = own_job(job_id)
        store = get_queue(job.queue).store
        return JobStatus(job, masked_logs(store.logs(job.id, job.queue)), store.children(job.id, job.queue))


@blp.route("/jobs/<string:job_id>/events")
class JobEvents(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}], responses={"200": EVENT_STREAM_DOC, "503": TOO_MANY_STREAMS_DOC})
    @blp.arguments(EventStreamArgsSchema, location="query", unknown=RAISE)
    @blp.arguments(JobStreamHeadersSchema, location="headers")
    @blp.alt_response(404, schema=ErrorSchema, description="No such job of the caller's")
    @blp.alt_response(422, schema=ErrorSchema, description="A bad timeout, or a Last-Event-ID this stream did not send")
    def get(self, args: dict[str, Any], headers: dict[str, Any], job_id: str) -> Response:
        """The job's state changes, progress and log lines as they happen (Server-Sent Events).

        Closes when the job is completed, failed, cancelled or expired, or after timeout seconds.
        """
        job = own_job(job_id)
        store = get_queue(job.queue).store
        try:
            return sse(job_stream(store, job, headers.get("last_event_id"), stream_seconds(args["timeout"])))
        except TooManyStreams as exc:
            abort(503, message=str(exc), headers={"Retry-After": "5"})
