"""The viewer role: the admin API's reads and the dashboard, and no change of any kind."""

import re
import secrets

import pytest

from rideshare.jobs import add_email_job, get_job
from rideshare.jobs.control import audit_entries, queue_overview

pytestmark = pytest.mark.integration

READS = ["/admin/queues", "/admin/queues/email", "/admin/queues/email/jobs?state=failed", "/admin/audit"]


@pytest.fixture
def failed_job(app, stack):
    data = {"to": f"viewer-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello"}
    stack.services.smtp.handler.plan(data["to"], "550 no such user")
    job = stack.wait_for_job(add_email_job(data).id)
    assert job.state == "failed"
    return job


def last_audit_id() -> int | None:
    entries = audit_entries(1, None)
    return entries[0].id if entries else None


def changes(job_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("post", f"/admin/jobs/{job_id}/retry", {}),
        ("delete", f"/admin/jobs/{job_id}", {}),
        ("post", "/admin/queues/email/retry-failed", {}),
        ("post", "/admin/queues/email/clean", {"state": "failed"}),
        ("post", "/admin/queues/email/pause", {}),
        ("post", "/admin/queues/email/resume", {}),
    ]


def test_a_viewer_reads_the_admin_api(client, stack, auth_headers, failed_job):
    viewer = auth_headers("9", "viewer")
    for path in [*READS, f"/admin/jobs/{failed_job.id}"]:
        response = client.get(path, headers=viewer)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    detail = client.get(f"/admin/jobs/{failed_job.id}", headers=viewer).json
    assert detail["state"] == "failed" and detail["data"]["to"] != failed_job.data["to"]  # masked as for admins
    listed = client.get("/admin/queues/email/jobs?state=failed&limit=500", headers=viewer).json
    assert failed_job.id in {job["id"] for job in listed["jobs"]}


def test_a_viewer_changes_nothing_through_the_admin_api(app, client, stack, auth_headers, failed_job):
    viewer = auth_headers("9", "viewer")
    audit_before = last_audit_id()
    for method, path, body in changes(failed_job.id):
        response = getattr(client, method)(path, json=body, headers=viewer)
        assert response.status_code == 403, (method, path, response.get_data(as_text=True))
        assert response.json["message"] == "admin role required"
    assert get_job(failed_job.id).state == "failed"
    assert queue_overview("email")["paused"] is False
    assert last_audit_id() == audit_before  # nothing done, nothing audited


def test_a_user_may_not_read_the_admin_api(client, stack, auth_headers, failed_job):
    user = auth_headers("42")
    for path in [*READS, f"/admin/jobs/{failed_job.id}"]:
        response = client.get(path, headers=user)
        assert response.status_code == 403, path
        assert response.json["message"] == "viewer or admin role required"


def sign_in(client, token: str):
    return client.post("/admin/login", data={"token": token})


def test_a_viewer_browses_the_dashboard_without_its_buttons(app, client, stack, auth_headers, failed_job):
    viewer_token = auth_headers("9", "viewer")["Authorization"].removeprefix("Bearer ")
    assert sign_in(client, viewer_token).status_code == 302

    index = client.get("/admin/")
    assert index.status_code == 200
    page = index.get_data(as_text=True)
    assert 'id="read-only"' in page and 'tr data-queue="email"' in page
    assert "Retry failed" not in page and "/admin/ui/queues/" not in page
    assert client.get("/admin/queues").status_code == 200  # the counts' refresh, with the session cookie

    job_page = client.get(f"/admin/ui/jobs/{failed_job.id}")
    assert job_page.status_code == 200
    page = job_page.get_data(as_text=True)
    assert failed_job.id in page and "550" in page
    assert not re.search(r'id="(retry|retry-edited|delete)"', page)

    with client.session_transaction() as session:
        csrf = session["csrf"]
    posts = [
        f"/admin/ui/jobs/{failed_job.id}/retry",
        f"/admin/ui/jobs/{failed_job.id}/delete",
        "/admin/ui/queues/email/pause",
        "/admin/ui/queues/email/retry-failed",
    ]
    for path in posts:
        assert client.post(path, data={"csrf_token": csrf}).status_code == 403, path
    assert get_job(failed_job.id).state == "failed"
    assert queue_overview("email")["paused"] is False

    assert client.post("/admin/logout", data={"csrf_token": csrf}).status_code == 302
    assert 'id="token"' in client.get("/admin/").get_data(as_text=True)


def test_an_admin_still_sees_the_buttons(app, client, stack, auth_headers, failed_job):
    assert sign_in(client, auth_headers("1", "admin")["Authorization"].removeprefix("Bearer ")).status_code == 302
    page = client.get("/admin/").get_data(as_text=True)
    assert "Retry failed" in page and 'id="read-only"' not in page
    assert 'id="delete"' in client.get(f"/admin/ui/jobs/{failed_job.id}").get_data(as_text=True)


def test_a_user_token_does_not_open_the_dashboard(client, stack, auth_headers):
    response = sign_in(client, auth_headers("42")["Authorization"].removeprefix("Bearer "))
    assert response.status_code == 403
    assert "does not carry the admin role" in response.get_data(as_text=True)
