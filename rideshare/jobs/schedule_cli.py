"""``flask --app rideshare jobs schedules|schedule-set|schedule-pause|schedule-resume|schedule-remove|
schedule-reseed`` for operators (each change audited), and ``jobs scheduler``: a scheduler process of
its own (which makes the shipped schedules it lacks first: rideshare.jobs.shipped)."""

import json
import logging
import signal
import threading
from typing import Any

import click
from flask import current_app

from jobqueue import InvalidJobData, InvalidJobOptions
from jobqueue.schedules import MISSED_POLICIES, POLL_INTERVAL_S, Schedule, ScheduleNotFound, Scheduler
from rideshare.audit import audit
from rideshare.jobs import list_schedules
from rideshare.jobs import schedules as control
from rideshare.jobs.cli import _actor, emit, jobs_cli, json_option, table
from rideshare.jobs.schemas import ms_to_iso
from rideshare.jobs.shipped import forget_shipped, seed_shipped_schedules, shipped_schedules
from rideshare.queues import QUEUES

log = logging.getLogger("rideshare.scheduler")


def _when(ms: int | None) -> str:
    iso = ms_to_iso(ms)
    return f"{iso[:10]} {iso[11:19]}" if iso else "-"


def _row(schedule: Schedule) -> list[Any]:
    return [
        schedule.id,
        schedule.queue,
        str(schedule.spec),
        schedule.missed,
        "yes" if schedule.paused else "no",
        "-" if schedule.paused else _when(schedule.next),
        _when(schedule.last_run_at),
        ", ".join(schedule.last_job_ids[:2]) or "-",
    ]


HEADERS = ["id", "queue", "when", "missed", "paused", "next run (UTC)", "last run (UTC)", "last jobs"]


def _json_object(value: str | None, option: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object", param_hint=option)
    return parsed


def _refused(exc: InvalidJobOptions | InvalidJobData) -> click.UsageError:
    return click.UsageError(f"not saved: {json.dumps(control.refusal(exc))}")


@jobs_cli.command("schedules")
@json_option
def schedules(as_json: bool) -> None:
    """Every schedule: when it ticks, its next and last run and last jobs."""
    found = list_schedules()
    dumped = [{k: v for k, v in s.to_dict().items() if k != "history"} for s in found]
    emit(as_json, dumped, table(HEADERS, [_row(s) for s in found]))


@jobs_cli.command("schedule-set")
@click.argument("schedule_id")
@click.option("--every-ms", type=int, default=None, help="Tick every this many ms (at its multiples).")
@click.option("--cron", default=None, help='A 5-field cron expression, such as "0 3 * * *".')
@click.option("--tz", default=None, help="The time zone of --cron (default UTC), such as Europe/Paris.")
@click.option("--queue", type=click.Choice(QUEUES), required=True)
@click.option("--data", "data_json", default=None, help="The job's data, as JSON.")
@click.option("--options", "options_json", default=None, help="The job's options, as JSON.")
@click.option("--missed", type=click.Choice(MISSED_POLICIES), default="run_once", show_default=True)
@json_option
def schedule_set(
    schedule_id: str,
    every_ms: int | None,
    cron: str | None,
    tz: str | None,
    queue: str,
    data_json: str | None,
    options_json: str | None,
    missed: str,
    as_json: bool,
) -> None:
    """Create or replace a schedule (checked as the admin API checks it; audited)."""
    body: dict[str, Any] = {
        "everyMs": every_ms,
        "cron": cron,
        "tz": tz,
        "job": {
            "queue": queue,
            "data": _json_object(data_json, "--data"),
            "options": _json_object(options_json, "--options"),
        },
        "missed": missed,
    }
    try:
        saved = control.set_schedule(schedule_id, body, actor=_actor())
    except (InvalidJobOptions, InvalidJobData) as exc:
        raise _refused(exc) from exc
    emit(as_json, saved.to_dict(), f"schedule {saved.id}: {saved.spec}, next run {_when(saved.next)} UTC")


def _pause_or_resume(schedule_id: str, paused: bool) -> None:
    try:
        found = control.set_paused(schedule_id, paused, actor=_actor())
    except ScheduleNotFound as exc:
        raise click.ClickException(f"schedule {schedule_id} not found") from exc
    click.echo(
        f"schedule {found.id} paused" if paused else f"schedule {found.id} resumed, next run {_when(found.next)} UTC"
    )


@jobs_cli.command("schedule-pause")
@click.argument("schedule_id")
def schedule_pause(schedule_id: str) -> None:
    """Pause a schedule: no tick fires until schedule-resume."""
    _pause_or_resume(schedule_id, True)


@jobs_cli.command("schedule-resume")
@click.argument("schedule_id")
def schedule_resume(schedule_id: str) -> None:
    """Resume a schedule from its first tick after now."""
    _pause_or_resume(schedule_id, False)


@jobs_cli.command("schedule-remove")
@click.argument("schedule_id")
def schedule_remove(schedule_id: str) -> None:
    """Remove a schedule and its history (the jobs it made stay)."""
    try:
        control.remove(schedule_id, actor=_actor())
    except ScheduleNotFound as exc:
        raise click.ClickException(f"schedule {schedule_id} not found") from exc
    click.echo(f"schedule {schedule_id} removed")


@jobs_cli.command("schedule-reseed")
@click.argument("schedule_id")
def schedule_reseed(schedule_id: str) -> None:
    """Make a shipped schedule again (one an operator removed): its marker dropped, then seeded."""
    shipped = {item.id: item for item in shipped_schedules(current_app.config)}
    if schedule_id not in shipped:
        raise click.ClickException(f"{schedule_id} is not a shipped schedule ({', '.join(shipped)})")
    jobs = current_app.extensions["jobs"]
    forget_shipped(jobs, schedule_id)
    made = seed_shipped_schedules(jobs, [shipped[schedule_id]])
    audit(_actor(), "schedule.reseed", schedule_id, made=bool(made))
    click.echo(f"schedule {schedule_id} " + ("made again" if made else "is there already: left as it is"))


@jobs_cli.command("scheduler")
@click.option(
    "--interval", type=click.FloatRange(0.05, 10), default=POLL_INTERVAL_S, show_default=True, help="Seconds."
)
def scheduler(interval: float) -> None:
    """Fire due schedules until SIGTERM or Ctrl-C (any number may run, beside the workers' own)."""
    stopped = threading.Event()

    def stop(signum: int, _: Any) -> None:
        log.info("scheduler.stopping", extra={"signal": signal.Signals(signum).name})
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    jobs = current_app.extensions["jobs"]
    if current_app.config.get("SHIPPED_SCHEDULES"):
        seed_shipped_schedules(jobs, shipped_schedules(current_app.config))
    log.info("scheduler.started", extra={"interval_s": interval})
    Scheduler(jobs, interval_s=interval).run(stopped)
    log.info("scheduler.stopped")
