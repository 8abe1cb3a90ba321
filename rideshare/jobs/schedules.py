"""Operators' schedules (admin API, dashboard, CLI): create or edit, pause, resume and remove
recurring jobs, each change audited with the schedule before and after (data masked)."""

from collections.abc import Mapping
from typing import Any

from jobqueue import InvalidJobData, InvalidJobOptions
from jobqueue.masking import mask
from jobqueue.schedules import InvalidSchedule, Schedule, ScheduleNotFound
from rideshare.audit import audit
from rideshare.jobs import get_schedules

__all__ = ["ScheduleNotFound", "refusal", "remove", "set_paused", "set_schedule", "summary"]


def summary(schedule: Schedule | None) -> dict[str, Any] | None:
    """What the audit log keeps of a schedule: its spec, job (data masked), policy and pause."""
    if schedule is None:
        return None
    return {
        **schedule.spec.to_dict(),
        "job": {
            "queue": schedule.queue,
            "name": schedule.name,
            "data": mask(schedule.data),
            "options": schedule.options,
        },
        "missed": schedule.missed,
        "paused": schedule.paused,
    }


def refusal(exc: InvalidJobOptions | InvalidJobData) -> dict[str, Any]:
    """An engine's refusal as the admin API's 422 names it: {"everyMs": [...], "job": {"data": {...}}}."""
    if isinstance(exc, InvalidSchedule):
        out: dict[str, Any] = {}
        for name, message in exc.errors.items():
            shown = message if isinstance(message, dict) else [message]
            if name == "job.options" and isinstance(message, dict):
                shown = {option: [text] for option, text in message.items()}
            if name.startswith("job."):
                out.setdefault("job", {})[name.removeprefix("job.")] = shown
            else:
                out[name] = shown
        return out
    if isinstance(exc, InvalidJobData):
        return {"job": {"data": exc.errors}}
    return {"job": {"options": {name: [message] for name, message in exc.errors.items()}}}


def set_schedule(schedule_id: str, body: Mapping[str, Any], *, actor: str) -> Schedule:
    """Create or replace a schedule from the admin API's body (everyMs or cron and tz, job,
    missed). Raises InvalidSchedule, InvalidJobData or InvalidJobOptions naming each bad field,
    changing nothing."""
    schedules = get_schedules()
    old = schedules.get(schedule_id)
    new = schedules.upsert(
        schedule_id,
        every_ms=body.get("everyMs"),
        cron=body.get("cron"),
        tz=body.get("tz"),
        job=body.get("job") or {},
        missed=body.get("missed") or "run_once",
    )
    action = "schedule.create" if old is None else "schedule.update"
    audit(actor, action, schedule_id, old=summary(old), new=summary(new))
    return new


def set_paused(schedule_id: str, paused: bool, *, actor: str) -> Schedule:
    """Pause or resume a schedule; ScheduleNotFound."""
    schedules = get_schedules()
    found = schedules.set_paused(schedule_id, paused)
    audit(actor, "schedule.pause" if paused else "schedule.resume", schedule_id)
    return found


def remove(schedule_id: str, *, actor: str) -> Schedule:
    """Delete a schedule and its history (the jobs it made stay); ScheduleNotFound."""
    removed = get_schedules().remove(schedule_id)
    audit(actor, "schedule.remove", schedule_id, old=summary(removed))
    return removed
