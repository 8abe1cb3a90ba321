"""The admin dashboard at /admin/: server-rendered pages, no front-end build step.

Sign-in takes a bearer token and keeps it in the signed session cookie; the
token's role is checked again on every request. Viewers browse; the action forms
are shown to admins only (can_act), and their routes need admin. Forms carry the
session's CSRF token. Charts are SVG drawn on the server (rideshare.admin.charts);
one small script of our own (static/dashboard.js) follows the dashboard's event
stream and updates counts, charts and a job's timeline in place.
"""

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for
from marshmallow import fields as ma_fields
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from jobqueue import InvalidJobData, InvalidJobOptions, Job, JobStore, QueueUnavailable
from jobqueue.flows import node_key, split_key
from jobqueue.limits import InvalidLimits
from jobqueue.masking import mask
from jobqueue.store import STATES
from rideshare.admin import charts
from rideshare.admin.api import job_detail
from rideshare.admin.schemas import JobDetailSchema
from rideshare.auth import (
    admin_required,
    csrf_token,
    current_user,
    decode_token,
    principal_from_session,
    viewer_required,
)
from rideshare.jobs import control, flow, get_job, get_queue
from rideshare.jobs.events import TooManyStreams, frame, payload, snapshot, sse
from rideshare.jobs.schemas import JobSchema, ms_to_iso
from rideshare.queues import QUEUES

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/admin",
    template_folder="../templates",
    static_folder="../static",
    static_url_path="/ui/static",
)
bp.add_app_template_filter(ms_to_iso, "ms_iso")
bp.add_app_template_filter(charts.duration, "duration")


@bp.app_template_filter("when")
def when(ms: int | None) -> str:
    """A time in ms as 'YYYY-MM-DD HH:MM:SS' UTC, for tables ('–' for none)."""
    iso = ms_to_iso(ms)
    return f"{iso[:10]} {iso[11:19]}" if iso else "–"


@bp.app_template_filter("time_of_day")
def time_of_day(ms: int | None) -> str:
    """A time in ms as 'HH:MM:SS.mmm' UTC (the timeline's column; its date is in the title)."""
    iso = ms_to_iso(ms)
    return iso[11:23] if iso else "–"


NO_DASHBOARD_ROLE = "That token does not carry the admin role, nor the viewer role."

# The history windows a queue's charts offer, in minutes.
WINDOWS = {"1h": 60, "24h": 24 * 60, "72h": 72 * 60}
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Filters of the jobs page (and of its bulk actions): query name -> search_jobs keyword.
FILTERS = {
    "queue": "queue",
    "state": "state",
    "q": "q",
    "owner": "owner",
    "rideId": "ride_id",
    "paymentId": "payment_id",
}
SEARCH_ONLY = ("q", "owner", "rideId", "paymentId")
MAX_FILTER_CHARS = 200
# The dashboard's event stream: open this long at most (the page's EventSource reconnects),
# counts sent at most this often, and a keep-alive after each idle wait of KEEPALIVE_MS, so
# a closed tab gives back its stream slot within a few seconds.
STREAM_SECONDS = 60
COUNTS_EVERY_S = 0.5
KEEPALIVE_MS = 1_000
# Stream events that change no count.
QUIET_EVENTS = ("progress", "log", "updated", "cancelling")


def unmask_edits(original: dict[str, Any], edited: dict[str, Any]) -> dict[str, Any]:
    """Edited data where every field left as shown (masked) keeps its real value."""
    shown = mask(original)
    return {
        key: original[key] if key in original and value == shown.get(key) else value for key, value in edited.items()
    }


def _actor() -> str:
    return f"user:{current_user().id}"


def _page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    """A signed-in page: the session's CSRF token, whether the caller may act, the event stream."""
    user = current_user()
    context.setdefault("stream_url", url_for("dashboard.stream"))
    html = render_template(template, csrf=csrf_token(), user=user, can_act=user.is_admin, queue_names=QUEUES, **context)
    return html, status


# -- overview -----------------------------------------------------------------------


def queue_card(name: str) -> dict[str, Any]:
    """One queue as the overview shows it: counts, health over the last hour, gauges."""
    overview = control.queue_overview(name)
    health = queue_charts(name, WINDOWS["1h"])
    slots = sum(int(w.get("concurrency") or 0) for w in health["workers"])
    return {
        **overview,
        "counts": health["counts"],
        "health": health,
        "oldest": charts.age_gauge(health["oldestWaitingMs"]),
        "utilisation": charts.utilisation_gauge(health["counts"]["active"], slots),
    }


@bp.get("/")
def index() -> str | tuple[str, int]:
    try:
        user = principal_from_session()
    except HTTPException:
        user = None
        flash("Your session token is no longer valid; sign in again.")
    if user is None:
        return render_template("admin/login.html")
    if not user.can_view:
        return render_template("admin/login.html", error=NO_DASHBOARD_ROLE), 403
    g.user = user  # as viewer_required would set it
    queues = [queue_card(name) for name in QUEUES]
    failed = {name: JobSchema(many=True).dump(control.find_jobs(name, state="failed", limit=20)[0]) for name in QUEUES}
    return _page("admin/index.html", queues=queues, failed=failed, states=STATES)


@bp.post("/login")
def login() -> Response | tuple[str, int]:
    token = request.form.get("token", "").strip()
    try:
        user = decode_token(token)
    except HTTPException:
        return render_template("admin/login.html", error="That token is not valid or has expired."), 401
    if not user.can_view:
        return render_template("admin/login.html", error=NO_DASHBOARD_ROLE), 403
    session.clear()
    session["token"] = token
    csrf_token()
    return redirect(url_for("dashboard.index"))


@bp.post("/logout")
@viewer_required
def logout() -> Response:
    session.clear()
    return redirect(url_for("dashboard.index"))


# -- history and health ----------------------------------------------------------------


def _window(name: str | None) -> tuple[str, int]:
    return (name, WINDOWS[name]) if name in WINDOWS else ("1h", WINDOWS["1h"])


def queue_charts(queue: str, minutes: int) -> dict[str, Any]:
    """A queue's health over minutes, with its charts drawn."""
    health = control.queue_health(queue, minutes)
    store = get_queue(queue).store
    buckets = store.history(queue, minutes)  # the histograms (queue_health gives their percentiles)
    wait, processing = health["waitMs"], health["processingMs"]
    return {
        **health,
        "throughput": charts.throughput_chart(health["series"], width=1240, height=200),
        "sparkline": charts.throughput_chart(health["series"], width=300, height=48, compact=True),
        "wait_chart": charts.histogram_chart(
            charts.histogram_counts(buckets, "w"), p50=wait["p50"], p95=wait["p95"], label="Wait time", kind="wait"
        ),
        "processing_chart": charts.histogram_chart(
            charts.histogram_counts(buckets, "p"),
            p50=processing["p50"],
            p95=processing["p95"],
            label="Processing time",
            kind="processing",
        ),
        "oldest": charts.age_gauge(health["oldestWaitingMs"]),
    }


def _known_queue(queue: str) -> None:
    if queue not in QUEUES:
        abort(404)


def _health_page(queue: str, status: int = 200, **limits_form: Any) -> tuple[str, int]:
    window, minutes = _window(request.args.get("window"))
    flow_status = flow.flow_status(queue, top=LIMITS_TOP_GROUPS)
    limits_form.setdefault("values", limit_inputs(flow_status["limits"]))
    return _page(
        "admin/health.html",
        status=status,
        queue=queue,
        window=window,
        windows=WINDOWS,
        h=queue_charts(queue, minutes),
        states=STATES,
        flow=flow_status,
        rate_text=flow.rate_text,
        limits_form={"errors": {}, **limits_form},
    )


@bp.get("/ui/health/<queue>")
@viewer_required
def health(queue: str) -> tuple[str, int]:
    _known_queue(queue)
    return _health_page(queue)


# -- flow control: the health page's limits panel ---------------------------------------------

LIMITS_TOP_GROUPS = 10
# The form's inputs and the PUT body's fields (Limits.changed's error keys).
LIMIT_INPUTS = {
    "rate": "rate",
    "concurrency": "concurrency",
    "group_concurrency": "group.concurrency",
    "group_rate": "group.rate",
}


def limit_inputs(limits: Mapping[str, Any]) -> dict[str, str]:
    """The form's inputs for limits as they are: text, empty for none."""
    rate, group = limits["rate"], limits["group"]
    return {
        "rate": flow.rate_text(rate) if rate else "",
        "concurrency": "" if limits["concurrency"] is None else str(limits["concurrency"]),
        "group_concurrency": str(group["concurrency"]),
        "group_rate": flow.rate_text(group["rate"]) if group["rate"] else "",
    }


def limits_body(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The PUT body the form stands for (every input given: empty or none removes a limit, an
    empty group concurrency is 1), and the inputs that are not numbers (left out of the body)."""
    text = {name: (form.get(name) or "").strip()[:MAX_FILTER_CHARS] for name in LIMIT_INPUTS}
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"group": {}}
    for name, field in LIMIT_INPUTS.items():
        into, key = (body["group"], field.removeprefix("group.")) if field.startswith("group.") else (body, field)
        value: Any = text[name]
        if value.lower() in ("", "none", "off"):
            value = 1 if name == "group_concurrency" else None
        elif key == "concurrency":
            if not (value.isascii() and value.isdigit()):
                errors[name] = "must be a whole number"
                continue
            value = int(value)
        into[key] = value
    return body, errors


@bp.post("/ui/queues/<queue>/limits")
@admin_required
def set_limits(queue: str) -> Response | tuple[str, int]:
    """The limits form: through the admin API's own change (audited), or the page again with each
    refused input's reason beside it (422), nothing changed."""
    _known_queue(queue)
    body, errors = limits_body(request.form)
    try:
        get_queue(queue).flow.get().changed(body)  # every refusal at once, before anything changes
    except InvalidLimits as exc:
        by_input = {field: name for name, field in LIMIT_INPUTS.items()}
        errors |= {by_input.get(field, "_form"): message for field, message in exc.errors.items()}
    if not errors:
        status = flow.set_limits(queue, body, actor=_actor())
        flash(f"{queue} limits: {flow.limits_text(status['limits'])}.")
        return redirect(url_for("dashboard.health", queue=queue))
    values = {name: (request.form.get(name) or "")[:MAX_FILTER_CHARS] for name in LIMIT_INPUTS}
    return _health_page(queue, status=422, values=values, errors=errors)


@bp.get("/ui/health/<queue>/charts")
@viewer_required
def health_charts(queue: str) -> str:
    """The charts of a queue alone (what the page re-fetches when its counts change)."""
    _known_queue(queue)
    window, minutes = _window(request.args.get("window"))
    compact = request.args.get("compact") == "1"
    return render_template(
        "admin/_charts.html", queue=queue, window=window, h=queue_charts(queue, minutes), compact=compact
    )


# -- browsing, search and bulk actions ------------------------------------------------


def _filters(source: Mapping[str, str]) -> dict[str, str]:
    """The jobs page's filters from a query or a form: known ones, trimmed, bounded."""
    found: dict[str, str] = {}
    for name in FILTERS:
        value = (source.get(name) or "").strip()[:MAX_FILTER_CHARS]
        if value:
            found[name] = value
    if found.get("queue") not in (None, *QUEUES):
        found.pop("queue")
    if found.get("state") not in (None, *STATES):
        found.pop("state")
    return found


def _search_kwargs(filters: Mapping[str, str]) -> dict[str, str]:
    return {FILTERS[name]: value for name, value in filters.items()}


def describe(filters: Mapping[str, str]) -> str:
    """A filter as words: 'queue payment, state failed, ride 12'."""
    words = {
        "queue": "queue",
        "state": "state",
        "q": "matching",
        "owner": "owner",
        "rideId": "ride",
        "paymentId": "payment",
    }
    return ", ".join(f"{words[name]} {value}" for name, value in filters.items()) or "every job"


@dataclass
class JobPage:
    jobs: list[Job]
    next_offset: int | None = None
    next_cursor: str | None = None
    error: str | None = None


def browse(filters: Mapping[str, str], offset: int, cursor: str | None, limit: int = PAGE_SIZE) -> JobPage:
    """A page of jobs: a queue's state set read in order when only queue (and state) are given,
    else the store's indexed search (every queue, or one, by any filter)."""
    if filters.get("queue") and not any(name in filters for name in SEARCH_ONLY):
        jobs, next_offset = control.find_jobs(filters["queue"], state=filters.get("state"), offset=offset, limit=limit)
        return JobPage(jobs, next_offset=next_offset)
    try:
        jobs, next_cursor = control.search_jobs(**_search_kwargs(filters), cursor=cursor, limit=limit)
    except control.InvalidCursor as exc:
        return JobPage([], error=str(exc))
    return JobPage(jobs, next_cursor=next_cursor)


def _jobs_page(filters: dict[str, str], confirm: dict[str, Any] | None = None) -> tuple[str, int]:
    offset = request.args.get("offset", "0")
    cursor = request.args.get("cursor") or None
    limit = request.args.get("limit", "")
    size = min(int(limit), MAX_PAGE_SIZE) if limit.isdigit() and int(limit) > 0 else PAGE_SIZE
    page = browse(filters, int(offset) if offset.isdigit() and len(offset) < 10 else 0, cursor, size)
    counts = get_queue(filters["queue"]).store.counts(filters["queue"]) if "queue" in filters else None
    return _page(
        "admin/jobs.html",
        filters=filters,
        described=describe(filters),
        page=page,
        counts=counts,
        states=STATES,
        confirm=confirm,
        bulk_actions=control.BULK_ACTIONS,
        first_page=not cursor and offset in ("", "0"),
        paging={"limit": size} if size != PAGE_SIZE else {},
    )


@bp.get("/ui/jobs")
@viewer_required
def jobs() -> tuple[str, int]:
    return _jobs_page(_filters(request.args))


@bp.post("/ui/jobs/bulk")
@admin_required
def bulk() -> Response | tuple[str, int]:
    """A bulk action on every job matching the filter: first a dry run whose count the page
    asks to confirm, then (confirmed=1) the action itself."""
    filters = _filters(request.form)
    action = request.form.get("action", "")
    if action not in control.BULK_ACTIONS:
        flash(f"Unknown bulk action {action!r}.", "error")
        return redirect(url_for("dashboard.jobs", **filters))
    if not filters:
        flash("Choose a filter first: a bulk action never applies to every job of every queue.", "error")
        return redirect(url_for("dashboard.jobs"))
    kwargs = _search_kwargs(filters)
    try:
        if request.form.get("confirmed") != "1":
            counted = control.bulk_action(action, actor=_actor(), dry_run=True, **kwargs)
            return _jobs_page(filters, confirm={"action": action, "matched": counted["matched"]})
        outcome = control.bulk_action(action, actor=_actor(), **kwargs)
    except QueueUnavailable as exc:
        flash(f"Nothing done: {exc}", "error")
        return redirect(url_for("dashboard.jobs", **filters))
    past = {"retry": "queued again", "cancel": "cancelled", "delete": "deleted"}[action]
    flash(f"{outcome['done']} of {outcome['matched']} jobs matching {describe(filters)} {past}.")
    return redirect(url_for("dashboard.jobs", **filters))


# -- one job ------------------------------------------------------------------------------


@dataclass
class FieldRow:
    """One field of a job's data in the edit form."""

    name: str
    value: str  # as shown: masked, JSON unless the value is text
    as_text: bool  # the input is taken as text (else parsed as JSON)
    required: bool
    description: str
    error: str = ""


TEXT_FIELDS = (ma_fields.String,)


def data_fields(job: Job, shown: Mapping[str, Any] | None = None) -> list[FieldRow]:
    """The edit form's rows: the job's own fields, then the rest of its queue's schema."""
    schema = get_queue(job.queue).policy.data_schema
    declared = dict(schema.fields) if schema is not None else {}
    masked = mask(job.data)
    rows = []
    for name in [*job.data, *(n for n in declared if n not in job.data)]:
        field = declared.get(name)
        current = job.data.get(name)
        as_text = isinstance(current, str) if name in job.data else isinstance(field, TEXT_FIELDS)
        if shown is not None and name in shown:
            value = shown[name]
        elif name not in job.data:
            value = ""
        else:
            value = masked[name] if as_text else json.dumps(masked[name])
        rows.append(
            FieldRow(
                name=name,
                value=value,
                as_text=as_text,
                required=bool(field and field.required),
                description=str(field.metadata.get("description", "")) if field else "",
            )
        )
    return rows


def submitted_data(job: Job, form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, str]]:
    """The data the edit form sent (fields left masked keep their real value), the per-field
    errors of reading it, and the raw inputs (to show again)."""
    rows = data_fields(job)
    edited: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    raw: dict[str, str] = {}
    for row in rows:
        text = form.get(f"f.{row.name}")
        if text is None:
            continue
        raw[row.name] = text
        if text.strip() == "":
            continue  # left empty: not sent
        if row.as_text:
            edited[row.name] = text
            continue
        try:
            edited[row.name] = json.loads(text)
        except ValueError:
            if row.name in job.data:
                errors[row.name] = ['must be JSON: a number, true/false, null, "text", [...] or {...}']
            else:
                edited[row.name] = text  # a new field: its schema judges it
    return unmask_edits(job.data, edited), errors, raw


def timeline(job: Job, detail: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The job's life, oldest first: its creation, each attempt's start and end, its events
    (its queue's recent stream entries) and its log lines, from its detail (JobDetailSchema,
    masked)."""
    items: list[dict[str, Any]] = [{"at": job.created_at, "kind": "created", "text": f"added to {job.queue}"}]
    for a in detail["attemptLog"]:
        if a.get("startedAt"):
            items.append(
                {
                    "at": a["startedAt"],
                    "kind": "attempt",
                    "text": f"attempt {a['attempt']} started on {a.get('worker')}",
                }
            )
        end = a.get("finishedAt") or (a.get("startedAt") or 0) + int(a.get("durationMs") or 0)
        outcome = f"failed: {a['error']}" if a.get("error") else "ended"
        items.append(
            {
                "at": end,
                "kind": "attempt-error" if a.get("error") else "attempt",
                "text": f"attempt {a['attempt']} {outcome} after {charts.duration(a.get('durationMs'))}",
            }
        )
    for event in detail.get("events", []):
        if event.get("event") == "log":
            continue  # the log lines below are kept longer than the stream's entries
        if event.get("event") == "progress":
            items.append({"at": event["at"], "kind": "progress", "text": f"progress {json.dumps(event['progress'])}"})
        else:
            items.append({"at": event["at"], "kind": "state", "text": f"{event['event']} → {event['state']}"})
    for line in detail.get("logs", []):
        items.append(
            {"at": line.get("at") or 0, "kind": "log", "text": f"[attempt {line.get('attempt')}] {line['line']}"}
        )
    return sorted(items, key=lambda item: item["at"])


def tag_link(tag: str) -> str:
    """The jobs page of every job with this tag ('rideId:12': the ride's jobs)."""
    field, _, value = tag.partition(":")
    name = field if field in ("rideId", "paymentId", "owner") else "q"
    return url_for("dashboard.jobs", **{name: value})


# How deep and how wide a job page draws a flow's tree.
FLOW_TREE_DEPTH = 8
FLOW_TREE_NODES = 200


def flow_tree(job: Job) -> dict[str, Any] | None:
    """The flow the job is part of, drawn from its root: each node's id, queue, state, link and
    children (a node shared by several parents is drawn in full once); None outside a flow."""
    root = (job.raw or {}).get("flowRoot")
    if not root:
        return None
    store = get_queue(job.queue).store
    root_queue, root_id = split_key(root)
    root_job = store.get(root_id, root_queue)
    drawn: set[str] = set()

    def node(queue: str, job_id: str, state: str, depth: int) -> dict[str, Any]:
        key = node_key(queue, job_id)
        shared = key in drawn
        drawn.add(key)
        kids = []
        if not shared and depth < FLOW_TREE_DEPTH and len(drawn) < FLOW_TREE_NODES:
            kids = [node(c["queue"], c["id"], c["state"], depth + 1) for c in store.children(job_id, queue)]
        return {
            "id": job_id,
            "queue": queue,
            "state": state,
            "url": url_for("dashboard.job_page", job_id=job_id),
            "current": job_id == job.id,
            "shared": shared,
            "children": kids,
        }

    tree = node(root_queue, root_id, root_job.state if root_job else "removed", 0)
    compensation = (root_job.raw or {}).get("compensation") if root_job else None
    tree["compensation"] = (
        {"id": compensation, "url": url_for("dashboard.job_page", job_id=compensation)} if compensation else None
    )
    return tree


def _job_page(
    job: Job, status: int = 200, rows: list[FieldRow] | None = None, form_error: str | None = None
) -> tuple[str, int]:
    detail = JobDetailSchema().dump(job_detail(job))
    return _page(
        "admin/job.html",
        status=status,
        job=detail,
        record=job,
        data_json=json.dumps(detail["data"], indent=2),
        progress_json=json.dumps(mask(job.progress)) if job.progress is not None else None,
        rows=rows if rows is not None else data_fields(job),
        form_error=form_error,
        timeline=timeline(job, detail),
        retryable=job.state in control.RETRYABLE_STATES,
        tag_links=[(tag, tag_link(tag)) for tag in job.tags],
        stream_url=url_for("dashboard.stream", job=job.id),
        flow_tree=flow_tree(job),
    )


@bp.get("/ui/jobs/<job_id>")
@viewer_required
def job_page(job_id: str) -> tuple[str, int]:
    job = get_job(job_id)
    if job is None:
        return _page("admin/missing.html", status=404, job_id=job_id)
    return _job_page(job)


def _refused_edit(
    job: Job, exc: InvalidJobData, raw: Mapping[str, str], errors: dict[str, list[str]]
) -> tuple[str, int]:
    """The job page again, with the inputs as sent and each field's errors beside it."""
    found = {**(exc.errors if isinstance(exc.errors, dict) else {"_data": [str(exc.errors)]}), **errors}
    rows = data_fields(job, shown=raw)
    names = {row.name for row in rows}
    for row in rows:
        if row.name in found:
            row.error = "; ".join(map(str, _flat(found[row.name])))
    rest = {k: v for k, v in found.items() if k not in names}
    general = "; ".join(f"{k}: {'; '.join(map(str, _flat(v)))}" for k, v in rest.items()) or None
    return _job_page(job, status=422, rows=rows, form_error=general or "Some fields are not valid; see beside each.")


def _flat(messages: Any) -> list[Any]:
    if isinstance(messages, dict):
        return [f"{k}: {m}" for k, v in messages.items() for m in _flat(v)]
    if isinstance(messages, list):
        return [m for item in messages for m in _flat(item)]
    return [messages]


def _edited(job: Job) -> tuple[dict[str, Any] | None, dict[str, list[str]], dict[str, str]]:
    """The data an edit or retry form sent, or None for 'as is'; per-field read errors; raw inputs.

    The form sends one input per field (f.<name>); a JSON object in 'data' is taken too.
    """
    if any(key.startswith("f.") for key in request.form):
        data, errors, raw = submitted_data(job, request.form)
        return data, errors, raw
    text = request.form.get("data", "").strip()
    if not text:
        return None, {}, {}
    try:
        edited = json.loads(text)
    except ValueError as exc:
        return None, {"_data": [f"not JSON: {exc}"]}, {}
    if not isinstance(edited, dict):
        return None, {"_data": ["job data must be a JSON object"]}, {}
    return unmask_edits(job.data, edited), {}, {}


@bp.post("/ui/jobs/<job_id>/retry")
@admin_required
def retry(job_id: str) -> Response | tuple[str, int]:
    job = get_job(job_id)
    if job is None:
        flash(f"Not retried: job {job_id} not found", "error")
        return redirect(url_for("dashboard.jobs"))
    data, errors, raw = _edited(job)
    try:
        if errors:
            raise InvalidJobData({})
        control.retry_job(job_id, actor=_actor(), data=data)
        flash(f"Job {job_id} queued again" + (" with edited data." if data is not None else "."))
    except InvalidJobData as exc:
        return _refused_edit(job, exc, raw, errors)
    except (control.JobNotFound, control.JobStateConflict, QueueUnavailable) as exc:
        flash(f"Not retried: {exc}", "error")
    return redirect(url_for("dashboard.job_page", job_id=job_id))


@bp.post("/ui/jobs/<job_id>/edit")
@admin_required
def edit(job_id: str) -> Response | tuple[str, int]:
    """Save new data for a job that is not running (validated by its queue's schema)."""
    job = get_job(job_id)
    if job is None:
        flash(f"Not saved: job {job_id} not found", "error")
        return redirect(url_for("dashboard.jobs"))
    data, errors, raw = _edited(job)
    try:
        if errors:
            raise InvalidJobData({})
        if data is None:
            flash("Nothing to save.", "error")
        else:
            control.edit_job_data(job_id, actor=_actor(), data=data)
            flash(f"Job {job_id}: data saved.")
    except InvalidJobData as exc:
        return _refused_edit(job, exc, raw, errors)
    except (control.JobNotFound, control.JobStateConflict, QueueUnavailable) as exc:
        flash(f"Not saved: {exc}", "error")
    return redirect(url_for("dashboard.job_page", job_id=job_id))


@bp.post("/ui/jobs/<job_id>/cancel")
@admin_required
def cancel(job_id: str) -> Response:
    reason = request.form.get("reason", "").strip() or f"cancelled from the dashboard by {_actor()}"
    try:
        outcome = control.cancel_job(job_id, actor=_actor(), reason=reason)
        if outcome == "cancelling":
            flash(f"Job {job_id} is running: asked to stop (it ends cancelled within seconds).")
        else:
            flash(f"Job {job_id} cancelled: it will not run.")
    except (control.JobNotFound, control.JobStateConflict, QueueUnavailable) as exc:
        flash(f"Not cancelled: {exc}", "error")
    return redirect(url_for("dashboard.job_page", job_id=job_id))


@bp.post("/ui/jobs/<job_id>/snooze")
@admin_required
def snooze(job_id: str) -> Response:
    try:
        seconds = float(request.form.get("seconds", ""))
        control.snooze_job(job_id, actor=_actor(), delay_ms=int(seconds * 1000))
        at = ms_to_iso(int(time.time() * 1000 + seconds * 1000))
        flash(f"Job {job_id} snoozed: it runs in {seconds:g} s, after {at}.")
    except ValueError:
        flash("Not snoozed: give the delay in seconds.", "error")
    except InvalidJobOptions as exc:
        flash(f"Not snoozed: {exc}", "error")
    except (control.JobNotFound, control.JobStateConflict, QueueUnavailable) as exc:
        flash(f"Not snoozed: {exc}", "error")
    return redirect(url_for("dashboard.job_page", job_id=job_id))


@bp.post("/ui/jobs/<job_id>/delete")
@admin_required
def delete(job_id: str) -> Response:
    try:
        control.delete_job(job_id, actor=_actor())
        flash(f"Job {job_id} deleted.")
    except (control.JobNotFound, control.JobStateConflict) as exc:
        flash(f"Not deleted: {exc}", "error")
    return redirect(url_for("dashboard.index"))


@bp.post("/ui/queues/<queue>/<action>")
@admin_required
def queue_action(queue: str, action: str) -> Response:
    if queue not in QUEUES or action not in ("pause", "resume", "retry-failed"):
        flash(f"Unknown action {action} on {queue}.", "error")
        return redirect(url_for("dashboard.index"))
    actor = _actor()
    if action == "retry-failed":
        flash(f"{control.retry_failed(queue, actor=actor)} failed {queue} jobs queued again.")
    else:
        control.set_paused(queue, action == "pause", actor=actor)
        flash(f"{queue} {'paused' if action == 'pause' else 'resumed'}.")
    return redirect(url_for("dashboard.index"))


# -- live updates -------------------------------------------------------------------------


def _counts(store: JobStore, queues: list[str]) -> dict[str, dict[str, int]]:
    return {queue: store.counts(queue) for queue in queues}


def dashboard_stream(store: JobStore, queues: list[str], job_id: str | None, seconds: float) -> Iterator[str]:
    """The dashboard's live feed, from the queues' Redis streams (XREAD BLOCK, no polling):
    'counts' ({queue: counts}) first and then for the queues whose jobs moved, at most every
    COUNTS_EVERY_S; with job_id, that job's state now ('state', event 'snapshot') and then its own
    events ('state', 'progress', 'log') as they come.
    Ends after seconds (the page's EventSource connects again)."""
    until = time.monotonic() + seconds
    after = {queue: store.last_event_id(queue) for queue in queues}
    yield "retry: 2000\n\n"
    yield frame("counts", _counts(store, queues))
    job = store.get(job_id) if job_id else None
    if job is not None:  # read after the streams' positions: a move in between is sent twice, never lost
        yield frame("state", snapshot(job))
    dirty: set[str] = set()
    sent = time.monotonic()
    while (left := until - time.monotonic()) > 0:
        wait_ms = KEEPALIVE_MS
        if dirty:
            wait_ms = int((sent + COUNTS_EVERY_S - time.monotonic()) * 1000)
        events = store.read_events(after, block_ms=max(1, min(int(left * 1000), wait_ms)))
        for queue, event_id, fields in events:
            after[queue] = event_id
            if fields.get("event") not in QUIET_EVENTS:
                dirty.add(queue)
            if job_id and fields.get("id") == job_id:
                kind, data = payload(queue, event_id, fields)
                yield frame(kind, data)
        if dirty and time.monotonic() - sent >= COUNTS_EVERY_S:
            yield frame("counts", _counts(store, sorted(dirty)))
            dirty.clear()
            sent = time.monotonic()
        elif not events:
            yield ": keep-alive\n\n"
    if dirty:
        yield frame("counts", _counts(store, sorted(dirty)))
    yield frame("end", {"reason": "timeout"})


@bp.get("/ui/stream")
@viewer_required
def stream() -> Response:
    """Server-Sent Events for the open page: counts as jobs move; with ?job=<id>, its events."""
    job_id = (request.args.get("job") or "")[:MAX_FILTER_CHARS] or None
    store: JobStore = current_app.extensions["jobs"].store
    cap = float(current_app.config.get("EVENT_STREAM_MAX_SECONDS", STREAM_SECONDS))
    try:
        return sse(dashboard_stream(store, list(QUEUES), job_id, min(STREAM_SECONDS, cap)))
    except TooManyStreams as exc:
        return Response(f"{exc}\n", status=503, mimetype="text/plain", headers={"Retry-After": "5"})
