"""The admin JSON API under /admin: queues, jobs, retries, cleaning, pause, audit."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from marshmallow import RAISE

from jobqueue import InvalidJobData, Job
from jobqueue.limits import InvalidLimits
from rideshare.admin.schemas import (
    AuditArgsSchema,
    AuditPageSchema,
    BulkBodySchema,
    BulkResultSchema,
    CancelBodySchema,
    CleanBodySchema,
    CleanedSchema,
    EditDataBodySchema,
    FlowStatusSchema,
    GroupLimitsBodySchema,
    GroupLimitsStatusSchema,
    HistoryArgsSchema,
    JobDetailSchema,
    JobListArgsSchema,
    JobPageSchema,
    JobSearchArgsSchema,
    JobSearchPageSchema,
    LimitsBodySchema,
    QueueEventsArgsSchema,
    QueueHealthSchema,
    QueueOverviewSchema,
    QueuesSchema,
    RetriedSchema,
    RetryBodySchema,
    SnoozeBodySchema,
    ThrottleBodySchema,
)
from rideshare.auth import admin_required, current_actor, viewer_required
from rideshare.jobs import control, flow, get_job, get_queue
from rideshare.jobs.events import (
    EVENT_STREAM_DOC,
    TOO_MANY_STREAMS_DOC,
    TooManyStreams,
    parse_positions,
    payload,
    queue_stream,
    sse,
    stream_seconds,
)
from rideshare.jobs.schemas import QueueStreamHeadersSchema, masked_logs
from rideshare.queues import QUEUES
from rideshare.ratelimit import job_limits

blp = Blueprint("admin", __name__, url_prefix="/admin", description="Queue and job control (role admin; reads: viewer)")
F = TypeVar("F", bound=Callable[..., Any])
ADMIN_DOC = {
    "security": [{"bearerAuth": []}],
    "responses": {"401": {"description": "No valid token"}, "403": {"description": "Not an admin"}},
}
VIEWER_DOC = {
    "security": [{"bearerAuth": []}],
    "responses": {"401": {"description": "No valid token"}, "403": {"description": "Neither a viewer nor an admin"}},
}


def known_queue(view: F) -> F:
    """404 for a queue name that is not email, analytics or payment."""

    @wraps(view)
    def wrapper(*args: Any, queue: str, **kwargs: Any) -> Any:
        if queue not in QUEUES:
            abort(404, message=f"no queue named {queue!r}; queues: {', '.join(QUEUES)}")
        return view(*args, queue=queue, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class JobDetail:
    """A job with its attempt log, log lines and recent events, as GET /admin/jobs/<id> shows it."""

    job: Job
    attempt_log: list[dict[str, Any]]
    logs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)


def job_detail(job: Job) -> JobDetail:
    store = get_queue(job.queue).store
    events = []
    for raw in control.job_events(job):
        _, shown = payload(job.queue, raw["eventId"], raw)
        events.append({"eventId": raw["eventId"], **{k: v for k, v in shown.items() if k not in ("jobId", "queue")}})
    return JobDetail(job, store.attempts(job.id, job.queue), masked_logs(store.logs(job.id, job.queue)), events)


@contextmanager
def job_answers(job_id: str) -> Iterator[None]:
    """A job action's refusals as the admin API answers them: 404 no such job, 409 its state
    does not allow it, 422 its new data is not valid for its queue."""
    try:
        yield
    except control.JobNotFound:
        abort(404, message=f"job {job_id} not found")
    except control.JobStateConflict as exc:
        abort(409, message=str(exc))
    except InvalidJobData as exc:
        abort(422, errors={"json": {"data": exc.errors}})


@blp.route("/queues")
class Queues(MethodView):
    decorators = [viewer_required]

    @blp.doc(**VIEWER_DOC)
    @blp.response(200, QueuesSchema)
    def get(self) -> dict[str, Any]:
        """Counts, pause state, workers, throughput and processing times of every queue."""
        return {"queues": [control.queue_overview(name) for name in QUEUES]}


@blp.route("/queues/<string:queue>")
class QueueResource(MethodView):
    decorators = [known_queue, viewer_required]

    @blp.doc(**VIEWER_DOC)
    @blp.response(200, QueueOverviewSchema)
    def get(self, queue: str) -> dict[str, Any]:
        """One queue's overview."""
        return control.queue_overview(queue)


@blp.route("/queues/<string:queue>/jobs")
class QueueJobs(MethodView):
    decorators = [known_queue, viewer_required]

    @blp.doc(**VIEWER_DOC)
    # unknown=RAISE: a misspelt filter (?stat=failed) is a 422, not a silently unfiltered list.
    @blp.arguments(JobListArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, JobPageSchema)
    def get(self, args: dict[str, Any], queue: str) -> dict[str, Any]:
        """Jobs of a queue, newest first; filter by state, find by id or by a data field."""
        if bool(args.get("field")) != ("value" in args):
            abort(422, errors={"query": {"field": ["field and value go together"]}})
        jobs, next_cursor = control.find_jobs(
            queue,
            state=args.get("state"),
            offset=args["cursor"],
            limit=args["limit"],
            job_id=args.get("jobId"),
            field=args.get("field"),
            value=args.get("value"),
        )
        return {"jobs": jobs, "nextCursor": next_cursor}


@blp.route("/queues/<string:queue>/retry-failed")
class RetryFailed(MethodView):
    decorators = [*job_limits, known_queue, admin_required]

    @blp.doc(**ADMIN_DOC)
    @blp.response(200, RetriedSchema)
    def post(self, queue: str) -> dict[str, Any]:
        """Retry every failed job of the queue."""
        retried = control.retry_failed(queue, actor=current_actor())
        return {"message": f"{retried} failed jobs queued again", "retried": retried}


@blp.route("/queues/<string:queue>/clean")
class Clean(MethodView):
    decorators = [known_queue, admin_required]

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(CleanBodySchema)
    @blp.response(200, CleanedSchema)
    def post(self, body: dict[str, Any], queue: str) -> dict[str, Any]:
        """Remove jobs that have been in a state longer than graceMs, up to limit."""
        removed = control.clean_queue(
            queue, actor=current_actor(), state=body["state"], grace_ms=body["graceMs"], limit=body["limit"]
        )
        return {"removed": removed, "count": len(removed)}


def _pause_view(paused: bool) -> type[MethodView]:
    class PauseResume(MethodView):
        decorators = [known_queue, admin_required]

        @blp.doc(**ADMIN_DOC)
        @blp.response(200, QueueOverviewSchema)
        def post(self, queue: str) -> dict[str, Any]:
            control.set_paused(queue, paused, actor=current_actor())
            return control.queue_overview(queue)

    PauseResume.post.__doc__ = (
        "Pause the queue: new and waiting jobs wait, no worker takes them."
        if paused
        else "Resume the queue: workers take its jobs again."
    )
    PauseResume.__name__ = "PauseQueue" if paused else "ResumeQueue"
    return PauseResume


blp.route("/queues/<string:queue>/pause", endpoint="pause")(_pause_view(True))
blp.route("/queues/<string:queue>/resume", endpoint="resume")(_pause_view(False))


@blp.route("/jobs/<string:job_id>")
class AdminJob(MethodView):
    decorators = [viewer_required]  # reads; delete needs admin as well

    @blp.doc(**VIEWER_DOC)
    @blp.response(200, JobDetailSchema)
    def get(self, job_id: str) -> JobDetail:
        """Everything about one job: masked data, options, every attempt, result."""
        job = get_job(job_id)
        if job is None:
            abort(404, message=f"job {job_id} not found")
        return job_detail(job)

    @blp.doc(**ADMIN_DOC)
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    @blp.alt_response(409, schema=ErrorSchema, description="The job is running")
    @admin_required
    def delete(self, job_id: str) -> None:
        """Remove a job that is not running."""
        with job_answers(job_id):
            control.delete_job(job_id, actor=current_actor())


@blp.route("/jobs/<string:job_id>/retry")
class RetryJob(MethodView):
    decorators = [*job_limits, admin_required]

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(RetryBodySchema, required=False)
    @blp.response(200, JobDetailSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    @blp.alt_response(409, schema=ErrorSchema, description="The job is not failed")
    @blp.alt_response(422, schema=ErrorSchema, description="The corrected data is not valid for its task")
    def post(self, body: dict[str, Any] | None, job_id: str) -> JobDetail:
        """Run a failed job again; {"data": {...}} retries it with corrected data."""
        data = (body or {}).get("data")
        with job_answers(job_id):
            job = control.retry_job(job_id, actor=current_actor(), data=data)
        return job_detail(job)


@blp.route("/audit")
class Audit(MethodView):
    decorators = [viewer_required]

    @blp.doc(**VIEWER_DOC)
    @blp.arguments(AuditArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, AuditPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Admin actions, newest first."""
        return {"entries": control.audit_entries(args["limit"], args.get("before"))}


# -- search, cancel, snooze, edit, bulk, history, events (issue 14) ---------------------


def search_filters(args: dict[str, Any]) -> dict[str, Any]:
    """The query's filters as control.search_jobs and control.bulk_action take them (times in ms)."""
    names = {"rideId": "ride_id", "paymentId": "payment_id"}
    filters = {names.get(k, k): v for k, v in args.items() if k in SEARCH_FILTERS}
    for bound in ("since", "until"):
        if bound in filters:
            filters[bound] = int(filters[bound].timestamp() * 1000)
    return filters


SEARCH_FILTERS = ("queue", "state", "name", "owner", "rideId", "paymentId", "q", "since", "until")


@blp.route("/jobs")
class JobSearch(MethodView):
    decorators = [viewer_required]

    @blp.doc(**VIEWER_DOC)
    @blp.arguments(JobSearchArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, JobSearchPageSchema)
    @blp.alt_response(422, schema=ErrorSchema, description="An unknown parameter, or a cursor of another search")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Jobs of every queue matching every filter given, newest first, from the search indexes.

        A page may hold fewer than limit jobs while nextCursor is not null: follow it.
        """
        try:
            jobs, next_cursor = control.search_jobs(
                **search_filters(args), cursor=args.get("cursor"), limit=args["limit"]
            )
        except control.InvalidCursor as exc:
            abort(422, errors={"query": {"cursor": [str(exc)]}})
        return {"jobs": jobs, "nextCursor": next_cursor}


@blp.route("/jobs/<string:job_id>/cancel")
class CancelJob(MethodView):
    decorators = [admin_required]

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(CancelBodySchema, required=False)
    @blp.response(200, JobDetailSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    @blp.alt_response(409, schema=ErrorSchema, description="The job is finished already")
    def post(self, body: dict[str, Any] | None, job_id: str) -> JobDetail:
        """Cancel a job: waiting or delayed, it never runs; running, it is stopped within seconds."""
        reason = (body or {}).get("reason") or "cancelled by an operator"
        with job_answers(job_id):
            control.cancel_job(job_id, actor=current_actor(), reason=reason)
        job = get_job(job_id)
        if job is None:  # removed at once by the queue's retention
            abort(404, message=f"job {job_id} was cancelled and removed")
        return job_detail(job)


@blp.route("/jobs/<string:job_id>/snooze")
class SnoozeJob(MethodView):
    decorators = [admin_required]

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(SnoozeBodySchema)
    @blp.response(200, JobDetailSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    @blp.alt_response(409, schema=ErrorSchema, description="The job is running or finished")
    def post(self, body: dict[str, Any], job_id: str) -> JobDetail:
        """Run a waiting or delayed job delayMs from now instead."""
        with job_answers(job_id):
            job = control.snooze_job(job_id, actor=current_actor(), delay_ms=body["delayMs"])
        return job_detail(job)


@blp.route("/jobs/<string:job_id>/data")
class JobData(MethodView):
    decorators = [admin_required]

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(EditDataBodySchema)
    @blp.response(200, JobDetailSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    @blp.alt_response(409, schema=ErrorSchema, description="The job is running")
    @blp.alt_response(422, schema=ErrorSchema, description="The data is not valid for the job's queue")
    def put(self, body: dict[str, Any], job_id: str) -> JobDetail:
        """Replace the data of a job that is not running; checked by its queue's schema."""
        with job_answers(job_id):
            job = control.edit_job_data(job_id, actor=current_actor(), data=body["data"])
        return job_detail(job)


@blp.route("/jobs/bulk")
class BulkJobs(MethodView):
    decorators = [admin_required]

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(BulkBodySchema)
    @blp.response(200, BulkResultSchema)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Retry, cancel or delete every job matching filter (at most 10,000); dryRun only counts them.

        retry takes failed, cancelled and expired jobs; cancel waiting, delayed and running
        ones; delete any that is not running. Others matching the filter are left alone.
        """
        result = control.bulk_action(
            body["action"], actor=current_actor(), dry_run=body["dryRun"], **search_filters(body["filter"])
        )
        return {"action": body["action"], "dryRun": body["dryRun"], **result}


@blp.route("/queues/<string:queue>/history")
class QueueHistory(MethodView):
    decorators = [known_queue, viewer_required]

    @blp.doc(**VIEWER_DOC)
    @blp.arguments(HistoryArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, QueueHealthSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such queue")
    def get(self, args: dict[str, Any], queue: str) -> dict[str, Any]:
        """A queue's health: per-minute finishes over the last minutes (up to 72 h), wait and
        processing p50/p95, the oldest waiting job, live workers, and a no-worker warning."""
        return control.queue_health(queue, args["minutes"])


@blp.route("/events")
class QueueEvents(MethodView):
    decorators = [viewer_required]

    @blp.doc(**VIEWER_DOC)
    @blp.doc(responses={"200": EVENT_STREAM_DOC, "503": TOO_MANY_STREAMS_DOC})
    @blp.arguments(QueueEventsArgsSchema, location="query", unknown=RAISE)
    @blp.arguments(QueueStreamHeadersSchema, location="headers")
    @blp.alt_response(
        422, schema=ErrorSchema, description="A bad parameter, or a Last-Event-ID this stream did not send"
    )
    def get(self, args: dict[str, Any], headers: dict[str, Any]) -> Response:
        """Every job event of a queue (or of all queues) as it happens (Server-Sent Events):
        first the counts, then each move, progress and log line; closes after timeout seconds."""
        queues = [args["queue"]] if args.get("queue") else list(QUEUES)
        positions = parse_positions(headers.get("last_event_id"), queues)
        store = get_queue(queues[0]).store
        try:
            return sse(queue_stream(store, queues, positions, stream_seconds(args["timeout"])))
        except TooManyStreams as exc:
            abort(503, message=str(exc), headers={"Retry-After": "5"})


# -- flow control (issue 15) ---------------------------------------------------------------


@contextmanager
def limit_answers() -> Iterator[None]:
    """A limits change the engine refuses: 422 naming each bad field, nothing changed."""
    try:
        yield
    except InvalidLimits as exc:
        abort(422, errors={"json": {name: [message] for name, message in exc.errors.items()}})


@blp.route("/queues/<string:queue>/limits")
class QueueLimits(MethodView):
    decorators = [known_queue, viewer_required]  # reads; put needs admin as well

    @blp.doc(**VIEWER_DOC)
    @blp.response(200, FlowStatusSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such queue")
    def get(self, queue: str) -> dict[str, Any]:
        """The queue's limits, how full they are now, the jobs waiting on them, and its largest group backlogs."""
        return flow.flow_status(queue)

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(LimitsBodySchema)
    @blp.response(200, FlowStatusSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such queue")
    @admin_required
    def put(self, body: dict[str, Any], queue: str) -> dict[str, Any]:
        """Change the queue's limits at run time: a field given replaces, null removes, a field left out stays.

        Every worker's next fetch obeys them, with no restart; they stay over restarts (the
        environment's PAYMENT_RATE_LIMIT and the like no longer replace them). Audited.
        """
        with limit_answers():
            return flow.set_limits(queue, body, actor=current_actor())


@blp.route("/queues/<string:queue>/groups/<string:group>/limits")
class GroupLimitsResource(MethodView):
    decorators = [known_queue, viewer_required]  # reads; put needs admin as well

    @blp.doc(**VIEWER_DOC)
    @blp.response(200, GroupLimitsStatusSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such queue, or a name no group can have")
    def get(self, queue: str, group: str) -> dict[str, Any]:
        """One group's own limits (null: the queue's group default), and what applies to it."""
        with known_group(group):
            return flow.group_limits(queue, group)

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(GroupLimitsBodySchema)
    @blp.response(200, GroupLimitsStatusSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such queue, or a name no group can have")
    @admin_required
    def put(self, body: dict[str, Any], queue: str, group: str) -> dict[str, Any]:
        """Give one group limits of its own; both null (or left out): back to the queue's group defaults. Audited."""
        with known_group(group), limit_answers():
            return flow.set_group_limits(queue, group, body, actor=current_actor())


@contextmanager
def known_group(group: str) -> Iterator[None]:
    try:
        yield
    except InvalidLimits:
        raise
    except ValueError as exc:  # check_group: 1 to 100 printable characters
        abort(404, message=f"no group can be named {group!r}: {exc}")


@blp.route("/queues/<string:queue>/throttle")
class Throttle(MethodView):
    decorators = [known_queue, admin_required]

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(ThrottleBodySchema)
    @blp.response(200, FlowStatusSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such queue")
    def post(self, body: dict[str, Any], queue: str) -> dict[str, Any]:
        """Take no job of the queue for ms (0 lifts a throttle); running jobs go on. Audited."""
        with limit_answers():
            return flow.throttle(queue, body["ms"], actor=current_actor())
