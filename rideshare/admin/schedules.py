"""The admin API's schedules under /admin/schedules: list, read, create or edit, pause, resume,
remove (role admin for changes, each audited; viewers read)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from marshmallow import RAISE, Schema, fields, validate

from jobqueue import InvalidJobData, InvalidJobOptions
from jobqueue.masking import mask
from jobqueue.schedules import MAX_EVERY_MS, MIN_EVERY_MS, MISSED_POLICIES, Schedule, ScheduleNotFound
from rideshare.admin.api import ADMIN_DOC, VIEWER_DOC
from rideshare.auth import admin_required, current_actor, viewer_required
from rideshare.jobs import get_schedule, list_schedules
from rideshare.jobs import schedules as control
from rideshare.queues import QUEUES

blp = Blueprint(
    "admin_schedules",
    __name__,
    url_prefix="/admin/schedules",
    description="Recurring jobs: one job per tick on any number of schedulers (role admin; reads: viewer)",
)
MS = "ms since the epoch"


class ScheduleJobBodySchema(Schema):
    class Meta:
        unknown = RAISE

    queue = fields.String(required=True, validate=validate.OneOf(QUEUES), metadata={"description": "The job's queue"})
    name = fields.String(
        validate=validate.Length(max=100),
        metadata={"description": "The queue's task (email.send, analytics.record, payment.charge); optional"},
    )
    data = fields.Dict(
        load_default=dict, metadata={"description": "The job's data, checked by its queue's schema when saved"}
    )
    options = fields.Dict(
        load_default=dict,
        metadata={"description": "Job options, as an add takes them (priority, attempts, delay, expires, ...)"},
    )


class ScheduleBodySchema(Schema):
    """PUT /admin/schedules/<id>: everyMs, or cron (and tz); the job; what to do with missed ticks."""

    class Meta:
        unknown = RAISE

    everyMs = fields.Integer(
        validate=validate.Range(min=MIN_EVERY_MS, max=MAX_EVERY_MS),
        metadata={"description": "Tick every this many ms, at its multiples since the epoch; or give cron"},
    )
    cron = fields.String(
        validate=validate.Length(min=9, max=100),
        metadata={"description": "A 5-field cron expression (minute hour day month weekday); or give everyMs"},
    )
    tz = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "The IANA time zone cron's times are in (UTC by default); daylight saving followed"},
    )
    job = fields.Nested(ScheduleJobBodySchema, required=True, metadata={"description": "What each tick queues"})
    missed = fields.String(
        load_default="run_once",
        validate=validate.OneOf(MISSED_POLICIES),
        metadata={
            "description": "When ticks were missed (every scheduler down): run_once fires the latest once; skip none"
        },
    )


class ScheduleJobSchema(Schema):
    queue = fields.String()
    name = fields.String()
    data = fields.Function(lambda job: mask(job["data"]), metadata={"description": "Sensitive fields masked"})
    options = fields.Dict()


class ScheduleTickSchema(Schema):
    tick = fields.Integer(metadata={"description": f"The tick's time, {MS}"})
    jobId = fields.String(metadata={"description": "The job it made (fired)"})
    outcome = fields.String(metadata={"description": "fired, skipped (missed) or invalid (its job was not valid)"})
    at = fields.Integer(metadata={"description": f"When a scheduler handled it, {MS}"})
    error = fields.String(metadata={"description": "Why its job was not valid"})


class ScheduleSchema(Schema):
    id = fields.String()
    everyMs = fields.Integer(allow_none=True)
    cron = fields.String(allow_none=True)
    tz = fields.String(allow_none=True)
    job = fields.Nested(ScheduleJobSchema)
    missed = fields.String(metadata={"description": "run_once or skip"})
    paused = fields.Boolean()
    nextRunAt = fields.Integer(allow_none=True, metadata={"description": f"The next tick, {MS}; null while paused"})
    lastTick = fields.Integer(allow_none=True, metadata={"description": f"The last tick fired, {MS}"})
    lastRunAt = fields.Integer(allow_none=True, metadata={"description": f"When it was fired, {MS}"})
    lastJobIds = fields.List(fields.String(), metadata={"description": "The last jobs it made, newest first"})
    lastError = fields.String(allow_none=True, metadata={"description": "Why the last tick's job was not valid"})
    fired = fields.Integer(metadata={"description": "Ticks fired since it was created"})
    createdAt = fields.Integer(metadata={"description": MS})
    updatedAt = fields.Integer(metadata={"description": MS})
    history = fields.List(
        fields.Nested(ScheduleTickSchema), metadata={"description": "The last 100 ticks, newest first"}
    )


class SchedulesSchema(Schema):
    schedules = fields.List(fields.Nested(ScheduleSchema))


def shown(schedule: Schedule) -> dict[str, Any]:
    """A schedule as the API shows it: everyMs, or cron and tz, the other null."""
    return {"everyMs": None, "cron": None, "tz": None, **schedule.to_dict()}


@contextmanager
def schedule_answers(schedule_id: str) -> Iterator[None]:
    """The engine's refusals as the API answers them: 404 no such schedule, 422 naming each bad field."""
    try:
        yield
    except ScheduleNotFound:
        abort(404, message=f"schedule {schedule_id} not found")
    except (InvalidJobOptions, InvalidJobData) as exc:
        abort(422, errors={"json": control.refusal(exc)})


@blp.route("")
class Schedules(MethodView):
    decorators = [viewer_required]

    @blp.doc(**VIEWER_DOC)
    @blp.response(200, SchedulesSchema)
    def get(self) -> dict[str, Any]:
        """Every schedule: its spec, job, next and last run, last jobs and its last 100 ticks."""
        return {"schedules": [shown(s) for s in list_schedules()]}


@blp.route("/<string:schedule_id>")
class ScheduleResource(MethodView):
    decorators = [viewer_required]  # reads; put and delete need admin as well

    @blp.doc(**VIEWER_DOC)
    @blp.response(200, ScheduleSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such schedule")
    def get(self, schedule_id: str) -> dict[str, Any]:
        """One schedule."""
        found = get_schedule(schedule_id)
        if found is None:
            abort(404, message=f"schedule {schedule_id} not found")
        return shown(found)

    @blp.doc(**ADMIN_DOC)
    @blp.arguments(ScheduleBodySchema)
    @blp.response(200, ScheduleSchema)
    @blp.alt_response(422, schema=ErrorSchema, description="A bad field: the spec, the job's queue, data or options")
    @admin_required
    def put(self, body: dict[str, Any], schedule_id: str) -> dict[str, Any]:
        """Create or replace a schedule at run time; every scheduler's next poll obeys it. Audited.

        A changed spec starts from its first tick after now; an unchanged one keeps its next
        tick. The job's data is checked by its queue's schema now, not at the first tick.
        """
        with schedule_answers(schedule_id):
            return shown(control.set_schedule(schedule_id, body, actor=current_actor()))

    @blp.doc(**ADMIN_DOC)
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such schedule")
    @admin_required
    def delete(self, schedule_id: str) -> None:
        """Remove a schedule and its history; the jobs it made stay. Audited."""
        with schedule_answers(schedule_id):
            control.remove(schedule_id, actor=current_actor())


def _pause_view(paused: bool) -> type[MethodView]:
    class PauseResume(MethodView):
        decorators = [admin_required]

        @blp.doc(**ADMIN_DOC)
        @blp.response(200, ScheduleSchema)
        @blp.alt_response(404, schema=ErrorSchema, description="No such schedule")
        def post(self, schedule_id: str) -> dict[str, Any]:
            with schedule_answers(schedule_id):
                return shown(control.set_paused(schedule_id, paused, actor=current_actor()))

    PauseResume.post.__doc__ = (
        "Pause the schedule: no tick fires, not even one a scheduler is handling now. Audited."
        if paused
        else "Resume the schedule from its first tick after now (ticks of the pause are not made up). Audited."
    )
    PauseResume.__name__ = "PauseSchedule" if paused else "ResumeSchedule"
    return PauseResume


blp.route("/<string:schedule_id>/pause", endpoint="pause")(_pause_view(True))
blp.route("/<string:schedule_id>/resume", endpoint="resume")(_pause_view(False))
