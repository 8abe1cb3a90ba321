"""The admin dashboard at /admin/: server-rendered pages, no front-end build step.

Sign-in takes a bearer token and keeps it in the signed session cookie; the
token's role is checked again on every request. Forms carry the session's
CSRF token.
"""

import json
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from jobqueue import InvalidJobData, QueueUnavailable
from jobqueue.masking import mask
from rideshare.admin.api import job_detail
from rideshare.admin.schemas import JobDetailSchema
from rideshare.auth import admin_required, csrf_token, decode_token, principal_from_session
from rideshare.jobs import control, get_job
from rideshare.jobs.schemas import JobSchema, ms_to_iso
from rideshare.queues import QUEUES

bp = Blueprint("dashboard", __name__, url_prefix="/admin", template_folder="../templates")
bp.add_app_template_filter(ms_to_iso, "ms_iso")


def unmask_edits(original: dict[str, Any], edited: dict[str, Any]) -> dict[str, Any]:
    """Edited data where every field left as shown (masked) keeps its real value."""
    shown = mask(original)
    return {
        key: original[key] if key in original and value == shown.get(key) else value for key, value in edited.items()
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
    if not user.is_admin:
        return render_template("admin/login.html", error="That token does not carry the admin role."), 403
    queues = [control.queue_overview(name) for name in QUEUES]
    failed = {name: JobSchema(many=True).dump(control.find_jobs(name, state="failed", limit=20)[0]) for name in QUEUES}
    return render_template("admin/index.html", queues=queues, failed=failed, csrf=csrf_token(), user=user)


@bp.post("/login")
def login() -> Response | tuple[str, int]:
    token = request.form.get("token", "").strip()
    try:
        user = decode_token(token)
    except HTTPException:
        return render_template("admin/login.html", error="That token is not valid or has expired."), 401
    if not user.is_admin:
        return render_template("admin/login.html", error="That token does not carry the admin role."), 403
    session.clear()
    session["token"] = token
    csrf_token()
    return redirect(url_for("dashboard.index"))


@bp.post("/logout")
@admin_required
def logout() -> Response:
    session.clear()
    return redirect(url_for("dashboard.index"))


@bp.get("/ui/jobs/<job_id>")
@admin_required
def job_page(job_id: str) -> str | tuple[str, int]:
    job = get_job(job_id)
    if job is None:
        return render_template("admin/missing.html", job_id=job_id), 404
    detail = JobDetailSchema().dump(job_detail(job))
    return render_template(
        "admin/job.html",
        job=detail,
        data_json=json.dumps(detail["data"], indent=2),
        csrf=csrf_token(),
    )


@bp.post("/ui/jobs/<job_id>/retry")
@admin_required
def retry(job_id: str) -> Response:
    actor = f"user:{principal_from_session().id}"
    raw = request.form.get("data", "").strip()
    try:
        data = None
        if raw:
            job = get_job(job_id)
            edited = json.loads(raw)
            if not isinstance(edited, dict):
                raise ValueError("job data must be a JSON object")
            data = unmask_edits(job.data if job else {}, edited)
        control.retry_job(job_id, actor=actor, data=data)
        flash(f"Job {job_id} queued again" + (" with edited data." if data is not None else "."))
    except (ValueError, InvalidJobData) as exc:
        flash(f"Not retried: {getattr(exc, 'errors', None) or exc}", "error")
    except (control.JobNotFound, control.JobStateConflict, QueueUnavailable) as exc:
        flash(f"Not retried: {exc}", "error")
    return redirect(url_for("dashboard.job_page", job_id=job_id))


@bp.post("/ui/jobs/<job_id>/delete")
@admin_required
def delete(job_id: str) -> Response:
    try:
        control.delete_job(job_id, actor=f"user:{principal_from_session().id}")
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
    actor = f"user:{principal_from_session().id}"
    if action == "retry-failed":
        flash(f"{control.retry_failed(queue, actor=actor)} failed {queue} jobs queued again.")
    else:
        control.set_paused(queue, action == "pause", actor=actor)
        flash(f"{queue} {'paused' if action == 'pause' else 'resumed'}.")
    return redirect(url_for("dashboard.index"))
