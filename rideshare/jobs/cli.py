"""``flask --app rideshare jobs ...``: queue stats, listing, search, retries, cancel, snooze, edits,
bulk actions, history, live events and cleaning for operators."""

import getpass
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from jobqueue import InvalidJobData, QueueUnavailable
from jobqueue.limits import InvalidLimits
from jobqueue.store import STATES
from rideshare.jobs import control, events, flow, get_job
from rideshare.jobs.schemas import JobSchema, masked_logs
from rideshare.queues import QUEUES

jobs_cli = AppGroup("jobs", help="Inspect and control jobs and queues.")
queue_option = click.option("--queue", "queue", type=click.Choice(QUEUES), required=True)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[str("" if c is None else c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def emit(as_json: bool, payload: Any, text: str) -> None:
    click.echo(json.dumps(payload, indent=2, default=str) if as_json else text)


@jobs_cli.command("stats")
@json_option
def stats(as_json: bool) -> None:
    """Counts per state, pause state, throughput and limits of every queue, and the largest group backlogs."""
    overview = [{**control.queue_overview(name), "flow": flow.flow_status(name, top=5)} for name in QUEUES]
    headers = ["queue", *STATES, "paused", "workers", "done/1m", "failed/1m", "p95 ms", "limits", "on limit"]
    rows = [
        [
            q["name"],
            *(q["counts"][s] for s in STATES),
            "yes" if q["paused"] else "no",
            len(q["workers"]),
            q["completedLastMinute"],
            q["failedLastMinute"],
            f"{q['p95ProcessingMs']:.1f}" if q["p95ProcessingMs"] is not None else "-",
            flow.limits_text(q["flow"]["limits"]),
            on_limit_text(q["flow"]),
        ]
        for q in overview
    ]
    lines = [table(headers, rows)]
    for q in overview:
        if q["flow"]["groups"]:
            largest = ", ".join(f"{g['group']} {g['backlog']} ({g['running']} in flight)" for g in q["flow"]["groups"])
            lines.append(f"{q['name']}: {plural(q['flow']['groupCount'], 'group')} held back; largest: {largest}")
    emit(as_json, overview, "\n".join(lines))


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def on_limit_text(status: dict[str, Any]) -> str:
    """How many waiting jobs a limit holds back now, and which: '12 (rate)'."""
    if not status["limited"]:
        return "0"
    return f"{status['waitingOnLimit']} ({'+'.join(status['limitedBy'])})"


@jobs_cli.command("list")
@queue_option
@click.option("--state", type=click.Choice(STATES), default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@json_option
def list_jobs(queue: str, state: str | None, limit: int, as_json: bool) -> None:
    """A queue's jobs, newest first."""
    jobs, _ = control.find_jobs(queue, state=state, limit=limit)
    dumped = JobSchema(many=True).dump(jobs)
    rows = [[j["id"], j["state"], j["attempts"], j["createdAt"], (j["failedReason"] or "")[:60]] for j in dumped]
    emit(as_json, dumped, table(["id", "state", "attempts", "created", "reason"], rows))


@jobs_cli.command("retry")
@click.argument("job_id")
@click.option("--data", "data_json", default=None, help="Corrected job data, as JSON.")
@json_option
def retry(job_id: str, data_json: str | None, as_json: bool) -> None:
    """Run a failed job again."""
    data = json.loads(data_json) if data_json else None
    try:
        job = control.retry_job(job_id, actor=_actor(), data=data)
    except control.JobNotFound as exc:
        raise click.ClickException(f"job {job_id} not found") from exc
    except (control.JobStateConflict, InvalidJobData, QueueUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    emit(as_json, JobSchema().dump(job), f"job {job.id} queued again ({job.queue})")


@jobs_cli.command("retry-failed")
@queue_option
@json_option
def retry_failed(queue: str, as_json: bool) -> None:
    """Retry every failed job of a queue."""
    retried = control.retry_failed(queue, actor=_actor())
    emit(as_json, {"queue": queue, "retried": retried}, f"{retried} failed {queue} jobs queued again")


@jobs_cli.command("clean")
@queue_option
@click.option("--state", type=click.Choice(control.CLEANABLE_STATES), required=True)
@click.option("--grace-ms", type=click.IntRange(0), default=0, show_default=True, help="Keep jobs newer than this.")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@json_option
def clean(queue: str, state: str, grace_ms: int, limit: int, as_json: bool) -> None:
    """Remove old jobs of one state."""
    removed = control.clean_queue(queue, actor=_actor(), state=state, grace_ms=grace_ms, limit=limit)
    emit(as_json, {"queue": queue, "state": state, "removed": removed}, f"removed {len(removed)} {state} {queue} jobs")


@jobs_cli.command("pause")
@queue_option
def pause(queue: str) -> None:
    """Pause a queue: its jobs wait, no worker takes them."""
    control.set_paused(queue, True, actor=_actor())
    click.echo(f"{queue} paused")


@jobs_cli.command("resume")
@queue_option
def resume(queue: str) -> None:
    """Resume a paused queue."""
    control.set_paused(queue, False, actor=_actor())
    click.echo(f"{queue} resumed")


# -- issue 14: show, cancel, snooze, edit, search, bulk, history, events ------------------


def _iso_time(_: click.Context, __: click.Parameter, value: str | None) -> int | None:
    """An ISO 8601 time (UTC unless it says) as ms since the epoch."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def search_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """The search filters, as options (shared by search and bulk)."""
    options = [
        click.option("--queue", type=click.Choice(QUEUES), default=None),
        click.option("--state", type=click.Choice(STATES), default=None),
        click.option("--name", default=None, help="The task's name."),
        click.option("--owner", default=None, help="The user who added the job."),
        click.option("--ride-id", default=None),
        click.option("--payment-id", default=None),
        click.option("--q", default=None, help="A job id, or any tagged value (owner, rideId, paymentId, ...)."),
        click.option("--since", callback=_iso_time, default=None, help="Created at or after (ISO 8601, UTC)."),
        click.option("--until", callback=_iso_time, default=None, help="Created at or before (ISO 8601, UTC)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _fail(job_id: str, exc: Exception) -> click.ClickException:
    if isinstance(exc, control.JobNotFound):
        return click.ClickException(f"job {job_id} not found")
    if isinstance(exc, InvalidJobData):
        return click.ClickException(f"invalid job data: {json.dumps(exc.errors)}")
    return click.ClickException(str(exc))


ACTION_ERRORS = (control.JobNotFound, control.JobStateConflict, InvalidJobData, QueueUnavailable)


@jobs_cli.command("show")
@click.argument("job_id")
@json_option
def show(job_id: str, as_json: bool) -> None:
    """One job: state, attempts, progress, cancel reason and its log lines (masked)."""
    job = get_job(job_id)
    if job is None:
        raise click.ClickException(f"job {job_id} not found")
    dumped = {**JobSchema().dump(job), "tags": job.tags, "logs": masked_logs(control.job_logs(job))}
    lines = [f"{k}: {v}" for k, v in dumped.items() if k not in ("logs", "result") and v not in (None, [], "")]
    lines += [f"log  #{e['attempt']} {e['line']}" for e in dumped["logs"]]
    emit(as_json, dumped, "\n".join(lines))


@jobs_cli.command("cancel")
@click.argument("job_id")
@click.option("--reason", default="cancelled from the CLI", show_default=True)
def cancel(job_id: str, reason: str) -> None:
    """Cancel a job: waiting or delayed, it never runs; running, it is stopped."""
    try:
        outcome = control.cancel_job(job_id, actor=_actor(), reason=reason)
    except ACTION_ERRORS as exc:
        raise _fail(job_id, exc) from exc
    click.echo(f"job {job_id} {outcome}")


@jobs_cli.command("snooze")
@click.argument("job_id")
@click.option("--delay-ms", type=click.IntRange(1, control.MAX_SNOOZE_MS), required=True)
def snooze(job_id: str, delay_ms: int) -> None:
    """Run a waiting or delayed job DELAY_MS from now instead."""
    try:
        job = control.snooze_job(job_id, actor=_actor(), delay_ms=delay_ms)
    except ACTION_ERRORS as exc:
        raise _fail(job_id, exc) from exc
    click.echo(f"job {job.id} delayed {delay_ms} ms")


@jobs_cli.command("edit")
@click.argument("job_id")
@click.option("--data", "data_json", required=True, help="The new job data, as JSON.")
def edit(job_id: str, data_json: str) -> None:
    """Replace the data of a job that is not running (checked by its queue's schema)."""
    try:
        data = json.loads(data_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from exc
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--data")
    try:
        job = control.edit_job_data(job_id, actor=_actor(), data=data)
    except ACTION_ERRORS as exc:
        raise _fail(job_id, exc) from exc
    click.echo(f"job {job.id} ({job.state}): data replaced")


@jobs_cli.command("search")
@search_filters
@click.option("--cursor", default=None, help="The next-page cursor a search printed.")
@click.option("--limit", type=click.IntRange(1, control.MAX_SEARCH_LIMIT), default=50, show_default=True)
@json_option
def search(cursor: str | None, limit: int, as_json: bool, **filters: Any) -> None:
    """Jobs of every queue matching every filter, newest first (indexed)."""
    try:
        jobs, next_cursor = control.search_jobs(**filters, cursor=cursor, limit=limit)
    except control.InvalidCursor as exc:
        raise click.BadParameter(str(exc), param_hint="--cursor") from exc
    dumped = JobSchema(many=True).dump(jobs)
    rows = [[j["id"], j["queue"], j["state"], j["attempts"], j["createdAt"]] for j in dumped]
    text = table(["id", "queue", "state", "attempts", "created"], rows)
    if next_cursor:
        text += f"\nmore: --cursor {next_cursor}"
    emit(as_json, {"jobs": dumped, "nextCursor": next_cursor}, text)


@jobs_cli.command("bulk")
@click.argument("action", type=click.Choice(control.BULK_ACTIONS))
@search_filters
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only count the matching jobs.")
@json_option
def bulk(action: str, yes: bool, dry_run: bool, as_json: bool, **filters: Any) -> None:
    """Retry, cancel or delete every job matching the filters (at most 10,000), after confirming the count."""
    counted = control.bulk_action(action, actor=_actor(), dry_run=True, **filters)
    if dry_run or not counted["matched"]:
        emit(as_json, {"action": action, "dryRun": True, **counted}, f"{counted['matched']} jobs would be {action}")
        return
    if not yes:
        click.confirm(f"{action} {counted['matched']} jobs?", abort=True)
    result = control.bulk_action(action, actor=_actor(), **filters)
    emit(as_json, {"action": action, "dryRun": False, **result}, f"{action}: {result['done']} of {result['matched']}")


@jobs_cli.command("history")
@queue_option
@click.option("--minutes", type=click.IntRange(1, control.MAX_HISTORY_MINUTES), default=60, show_default=True)
@json_option
def history(queue: str, minutes: int, as_json: bool) -> None:
    """A queue's health: finishes per minute, wait and processing p50/p95, oldest waiting, workers."""
    health = control.queue_health(queue, minutes)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"{queue}: last {minutes} min",
        "totals: " + ", ".join(f"{k} {v}" for k, v in health["totals"].items()),
        f"wait ms p50/p95: {ms(health['waitMs']['p50'])} / {ms(health['waitMs']['p95'])}",
        f"processing ms p50/p95: {ms(health['processingMs']['p50'])} / {ms(health['processingMs']['p95'])}",
        f"oldest waiting ms: {ms(health['oldestWaitingMs'])}",
        f"workers: {', '.join(w['name'] for w in health['workers']) or 'none'}",
    ]
    if health["warning"]:
        lines.append(f"WARNING: {health['warning']}")
    busy = [m for m in health["series"] if any(m[f] for f in control.SERIES_FIELDS)]
    rows = [
        [time.strftime("%H:%M", time.localtime(m["minute"] / 1000)), *(m[f] for f in control.SERIES_FIELDS)]
        for m in busy
    ]
    lines.append(table(["minute", *control.SERIES_FIELDS], rows))
    emit(as_json, health, "\n".join(lines))


@jobs_cli.command("events")
@click.option("--queue", type=click.Choice(QUEUES), default=None, help="One queue (default: all).")
@click.option("--max-seconds", type=click.FloatRange(min=0.1), default=None, help="Stop after this long.")
def follow_events(queue: str | None, max_seconds: float | None) -> None:
    """Follow job events as they happen (Ctrl-C to stop)."""
    store = current_app.extensions["jobs"].store
    queues = [queue] if queue else list(QUEUES)
    after = {name: store.last_event_id(name) for name in queues}
    until = time.monotonic() + (max_seconds if max_seconds is not None else float("inf"))
    try:
        for item in events.follow(store, after, until, lambda *_: True):
            if item is not None:
                click.echo(events.to_text(*item))
    except KeyboardInterrupt:
        pass


# -- issue 15: flow control -----------------------------------------------------------------


def _none_or(kind: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """An option's value as the PUT body takes it: 'none' (or 'off') is null."""

    def convert(_: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None or value.strip().lower() in ("none", "off"):
            return None
        try:
            return kind(value)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r} is not a whole number or none", param=param) from exc

    return convert


LIMIT_OPTIONS = {
    "rate": "--rate",
    "concurrency": "--concurrency",
    "group": "--group-concurrency / --group-rate",
    "group.concurrency": "--group-concurrency",
    "group.rate": "--group-rate",
}


@jobs_cli.command("limits")
@click.argument("queue", type=click.Choice(QUEUES))
@click.option(
    "--rate", callback=_none_or(str), help="Jobs per window across every worker: 25/s, 600/min, 10/500ms; none."
)
@click.option("--concurrency", callback=_none_or(int), help="Jobs running at once across every worker; none.")
@click.option(
    "--group-concurrency", type=click.IntRange(1), default=None, help="Jobs of one group at once (1: in order)."
)
@click.option("--group-rate", callback=_none_or(str), help="Jobs of one group per window: 5/s; none.")
@json_option
def limits(
    queue: str, rate: Any, concurrency: Any, group_concurrency: int | None, group_rate: Any, as_json: bool
) -> None:
    """Show a queue's limits, how full they are and its largest group backlogs; the options change them
    at run time (every worker's next fetch obeys; kept over restarts; audited)."""
    ctx = click.get_current_context()
    given = {
        name
        for name in ("rate", "concurrency", "group_concurrency", "group_rate")
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    if given:
        body: dict[str, Any] = {
            name: value for name, value in (("rate", rate), ("concurrency", concurrency)) if name in given
        }
        group = {
            name: value
            for name, value in (("concurrency", group_concurrency), ("rate", group_rate))
            if f"group_{name}" in given
        }
        if group:
            body["group"] = group
        try:
            status = flow.set_limits(queue, body, actor=_actor())
        except InvalidLimits as exc:
            raise click.UsageError("; ".join(f"{LIMIT_OPTIONS.get(k, k)}: {v}" for k, v in exc.errors.items())) from exc
    else:
        status = flow.flow_status(queue)
    lines = [
        f"{queue}: {flow.limits_text(status['limits'])} (set by {status['setBy'] or 'nobody'})",
        f"active {status['active']}"
        + (f" of {status['limits']['concurrency']}" if status["limits"]["concurrency"] is not None else "")
        + (
            f", rate slots used {status['rateUsed']} of {status['limits']['rate']['max']}"
            if status["limits"]["rate"]
            else ""
        )
        + (f", throttled {status['throttledMs']} ms more" if status["throttledMs"] else ""),
        f"waiting on a limit: {on_limit_text(status)}; "
        f"grouped {status['grouped']} in {plural(status['groupCount'], 'group')}",
    ]
    if status["groups"]:
        lines.append(
            table(
                ["group", "held back", "in flight"],
                [[g["group"], g["backlog"], g["running"]] for g in status["groups"]],
            )
        )
    emit(as_json, status, "\n".join(lines))
