"""The dashboard's schedules page (/admin/ui/schedules): each schedule's next and last run, its last
jobs, a sparkline of its last ticks; admins pause, resume and edit through the admin API's own
changes (audited), viewers read. Its routes are on the dashboard's blueprint."""

import json
from collections.abc import Mapping
from typing import Any

from flask import flash, redirect, request, url_for
from werkzeug.wrappers import Response

from jobqueue import InvalidJobData, InvalidJobOptions
from jobqueue.masking import mask
from jobqueue.schedules import MISSED_POLICIES, Schedule, ScheduleNotFound
from rideshare.admin import charts
from rideshare.admin.dashboard import _page, bp
from rideshare.auth import admin_required, current_user, viewer_required
from rideshare.jobs import get_schedule, list_schedules
from rideshare.jobs import schedules as control
from rideshare.queues import QUEUES

MAX_INPUT_CHARS = 20_000
FORM_FIELDS = ("every_ms", "cron", "tz", "queue", "data", "options", "missed")


def _actor() -> str:
    return f"user:{current_user().id}"


def card(schedule: Schedule) -> dict[str, Any]:
    """One schedule as the page shows it: data masked, its sparkline drawn."""
    return {
        "s": schedule,
        "data": mask(schedule.data),
        "sparkline": charts.tick_sparkline(schedule.history),
        "skipped": sum(1 for t in schedule.history if t.get("outcome") != "fired"),
    }


def form_values(schedule: Schedule) -> dict[str, str]:
    """The edit form's inputs for a schedule as it is (data masked: fields left masked keep their value)."""
    return {
        "every_ms": "" if schedule.spec.every_ms is None else str(schedule.spec.every_ms),
        "cron": schedule.spec.cron or "",
        "tz": schedule.spec.tz if schedule.spec.cron else "",
        "queue": schedule.queue,
        "data": json.dumps(mask(schedule.data), indent=2),
        "options": json.dumps(schedule.options, indent=2) if schedule.options else "",
        "missed": schedule.missed,
    }


def _unmasked(original: Mapping[str, Any], edited: Mapping[str, Any]) -> dict[str, Any]:
    """Edited data where each field left as shown (masked) keeps its real value."""
    shown = mask(dict(original))
    return {k: original[k] if k in original and v == shown.get(k) else v for k, v in edited.items()}


def form_body(schedule: Schedule, form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The PUT body the edit form stands for, and the inputs that cannot be read (not sent)."""
    text = {name: (form.get(name) or "").strip()[:MAX_INPUT_CHARS] for name in FORM_FIELDS}
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"missed": text["missed"] or "run_once"}
    if text["every_ms"]:
        if text["every_ms"].isdigit():
            body["everyMs"] = int(text["every_ms"])
        else:
            errors["every_ms"] = "must be a whole number of ms"
    if text["cron"]:
        body["cron"] = text["cron"]
    if text["tz"]:
        body["tz"] = text["tz"]
    job: dict[str, Any] = {"queue": text["queue"]}
    for name in ("data", "options"):
        if not text[name]:
            job[name] = {}
            continue
        try:
            value = json.loads(text[name])
        except ValueError as exc:
            errors[name] = f"not JSON: {exc}"
            continue
        if not isinstance(value, dict):
            errors[name] = "must be a JSON object"
            continue
        job[name] = _unmasked(schedule.data, value) if name == "data" else value
    body["job"] = job
    return body, errors


def flat_errors(refused: Mapping[str, Any]) -> dict[str, str]:
    """The admin API's 422 errors ({"everyMs": [...], "job": {"data": {...}}}) by the form's inputs."""
    inputs = {"everyMs": "every_ms", "cron": "cron", "tz": "tz", "missed": "missed"}
    out: dict[str, str] = {}
    for name, messages in refused.items():
        if name == "job":
            for part, detail in messages.items():
                key = part if part in ("queue", "data", "options") else "queue"
                out[key] = "; ".join(_texts(detail))
        else:
            out[inputs.get(name, "every_ms")] = "; ".join(_texts(messages))
    return out


def _texts(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, Mapping):
        return [t for k, v in detail.items() for t in _texts(v, f"{prefix}{k}: ")]
    if isinstance(detail, list):
        return [t for item in detail for t in _texts(item, prefix)]
    return [f"{prefix}{detail}"]


@bp.get("/ui/schedules")
@viewer_required
def schedules() -> tuple[str, int]:
    return _page("admin/schedules.html", cards=[card(s) for s in list_schedules()], editing=None)


def _edit_page(schedule: Schedule, status: int = 200, values: dict[str, str] | None = None, errors: Any = None):
    return _page(
        "admin/schedules.html",
        status=status,
        cards=[card(schedule)],
        editing={"s": schedule, "values": values or form_values(schedule), "errors": errors or {}},
        queues=QUEUES,
        policies=MISSED_POLICIES,
    )


@bp.get("/ui/schedules/<schedule_id>")
@viewer_required
def schedule_page(schedule_id: str) -> tuple[str, int]:
    found = get_schedule(schedule_id)
    if found is None:
        flash(f"No schedule {schedule_id}.", "error")
        return _page("admin/schedules.html", status=404, cards=[], editing=None)
    return _edit_page(found)


@bp.post("/ui/schedules/<schedule_id>")
@admin_required
def edit_schedule(schedule_id: str) -> Response | tuple[str, int]:
    """The edit form: through the admin API's own change (audited), or the page again with each
    refused input's reason beside it (422), nothing changed."""
    found = get_schedule(schedule_id)
    if found is None:
        flash(f"Not saved: no schedule {schedule_id}.", "error")
        return redirect(url_for("dashboard.schedules"))
    body, errors = form_body(found, request.form)
    if not errors:
        try:
            saved = control.set_schedule(schedule_id, body, actor=_actor())
        except (InvalidJobOptions, InvalidJobData) as exc:
            errors = flat_errors(control.refusal(exc))
        else:
            flash(f"Schedule {saved.id} saved: {saved.spec}.")
            return redirect(url_for("dashboard.schedules"))
    values = {name: (request.form.get(name) or "")[:MAX_INPUT_CHARS] for name in FORM_FIELDS}
    return _edit_page(found, status=422, values=values, errors=errors)


@bp.post("/ui/schedules/<schedule_id>/<action>")
@admin_required
def schedule_action(schedule_id: str, action: str) -> Response:
    if action not in ("pause", "resume"):
        flash(f"Unknown action {action}.", "error")
        return redirect(url_for("dashboard.schedules"))
    try:
        control.set_paused(schedule_id, action == "pause", actor=_actor())
        flash(f"Schedule {schedule_id} {'paused' if action == 'pause' else 'resumed'}.")
    except ScheduleNotFound:
        flash(f"No schedule {schedule_id}.", "error")
    return redirect(url_for("dashboard.schedules"))
