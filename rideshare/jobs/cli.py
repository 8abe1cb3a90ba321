"""``flask --app rideshare jobs ...``: queue stats, listing, retries and cleaning for operators."""

import getpass
import json
from collections.abc import Sequence
from typing import Any

import click
from flask.cli import AppGroup

from jobqueue import InvalidJobData, QueueUnavailable
from jobqueue.store import STATES
from rideshare.jobs import control
from rideshare.jobs.schemas import JobSchema
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
    """Counts per state, pause state and throughput of every queue."""
    overview = [control.queue_overview(name) for name in QUEUES]
    headers = ["queue", *STATES, "paused", "workers", "done/1m", "failed/1m", "p95 ms"]
    rows = [
        [
            q["name"],
            *(q["counts"][s] for s in STATES),
            "yes" if q["paused"] else "no",
            len(q["workers"]),
            q["completedLastMinute"],
            q["failedLastMinute"],
            f"{q['p95ProcessingMs']:.1f}" if q["p95ProcessingMs"] is not None else "-",
        ]
        for q in overview
    ]
    emit(as_json, overview, table(headers, rows))


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
