"""The dashboard's pages and routes through Flask's client, against the live stack: paging,
the live stream, chart fragments, per-field validation, snooze, and what viewers may not do.
(tests/integration/test_dashboard_browser.py drives the same pages in Chromium.)"""

import json
import re
import secrets

import pytest

from rideshare.jobs import add_email_job, control, get_job
from rideshare.jobs.control import audit_entries

pytestmark = pytest.mark.integration


def mail(**extra) -> dict:
    return {"to": f"d-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello", **extra}


def signed_in(client, auth_headers, role: str = "admin", user: str = "1"):
    bearer = auth_headers(user, role)["Authorization"].removeprefix("Bearer ")
    assert client.post("/admin/login", data={"token": bearer}).status_code == 302
    with client.session_transaction() as session:
        return session["csrf"]


@pytest.fixture
def later(app, stack):
    """Three delayed email jobs of one owner, cancelled afterwards."""
    owner = f"o-{secrets.token_hex(3)}"
    jobs = [add_email_job(mail(), delay=3_600_000, owner=owner) for _ in range(3)]
    yield owner, jobs
    for job in jobs:
        if get_job(job.id) is not None:
            stack.app.extensions["jobs"].queues["email"].delete(job.id)


def rows(html: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)"', html)


def next_link(html: str) -> str | None:
    found = re.search(r'<a id="next-page" href="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_search_pages_by_cursor_and_a_state_by_offset(client, stack, auth_headers, later):
    owner, jobs = later
    signed_in(client, auth_headers, "viewer", "9")
    first = client.get(f"/admin/ui/jobs?owner={owner}&limit=2").get_data(as_text=True)
    assert rows(first) == [jobs[2].id, jobs[1].id]  # newest first
    second = client.get(next_link(first)).get_data(as_text=True)
    assert rows(second) == [jobs[0].id] and next_link(second) is None and 'id="first-page"' in second

    listed = client.get("/admin/ui/jobs?queue=email&state=delayed&limit=1").get_data(as_text=True)
    assert len(rows(listed)) == 1 and "offset=1" in next_link(listed)

    bad = client.get(f"/admin/ui/jobs?owner={owner}&cursor=not-a-cursor")
    assert bad.status_code == 200 and rows(bad.get_data(as_text=True)) == []


def test_the_stream_sends_counts_then_the_counts_that_moved(client, stack, auth_headers, monkeypatch):
    signed_in(client, auth_headers, "viewer", "9")
    monkeypatch.setitem(stack.app.config, "EVENT_STREAM_MAX_SECONDS", 5)
    response = client.get("/admin/ui/stream", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    chunks = (chunk.decode() if isinstance(chunk, bytes) else chunk for chunk in response.response)
    counts = []
    try:
        for text in chunks:
            if text.startswith("event: counts"):
                counts.append(json.loads(text.split("data: ", 1)[1]))
                if len(counts) == 1:
                    job = add_email_job(mail())
                else:
                    break
    finally:
        response.close()
    assert set(counts[0]) == {"email", "analytics", "payment"}  # every queue first
    assert len(counts) == 2 and "email" in counts[1]  # then the queue whose job moved, within the 5 s
    stack.wait_for_job(job.id)


def test_chart_fragments_draw_the_window_asked(client, stack, auth_headers):
    signed_in(client, auth_headers, "viewer", "9")
    for window, bins in (("1h", "1"), ("24h", "10"), ("72h", "30")):
        html = client.get(f"/admin/ui/health/email/charts?window={window}").get_data(as_text=True)
        assert (
            f'data-bin-minutes="{bins}"' in html and 'data-chart="wait"' in html and 'data-chart="processing"' in html
        )
    page = client.get("/admin/ui/health/payment").get_data(as_text=True)
    assert 'data-chart-queue="payment"' in page and "Live workers" in page
    assert client.get("/admin/ui/health/nope").status_code == 404


def test_a_queue_with_a_backlog_and_no_worker_is_flagged(app, client, stack, auth_headers, monkeypatch):
    monkeypatch.setattr(control, "queue_workers", lambda name: [])  # as if every email worker were gone
    email = stack.app.extensions["jobs"].queues["email"]
    email.pause()  # so the live worker leaves the job waiting
    job = add_email_job(mail())
    try:
        signed_in(client, auth_headers, "viewer", "9")
        html = client.get("/admin/").get_data(as_text=True)
        assert 'data-warning="email"' in html and "1 jobs wait and no live worker consumes email" in html
        assert 'data-warning="payment"' not in html
    finally:
        email.delete(job.id)
        email.resume()


def test_editing_data_is_validated_per_field_and_keeps_masked_values(client, stack, auth_headers, later):
    _, jobs = later
    job = jobs[0]
    csrf = signed_in(client, auth_headers)
    page = client.get(f"/admin/ui/jobs/{job.id}").get_data(as_text=True)
    shown_to = re.search(r'name="f\.to" value="([^"]+)"', page).group(1)
    assert shown_to != job.data["to"] and "***" in shown_to

    bad = client.post(
        f"/admin/ui/jobs/{job.id}/edit", data={"csrf_token": csrf, "f.to": "nobody", "f.subject": "x" * 300}
    )
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert 'id="error-to"' in html and 'id="error-subject"' in html and 'value="nobody"' in html
    assert get_job(job.id).data == job.data

    saved = client.post(
        f"/admin/ui/jobs/{job.id}/edit",
        data={"csrf_token": csrf, "f.to": shown_to, "f.subject": "New subject", "f.text": "hello"},
    )
    assert saved.status_code == 302
    assert get_job(job.id).data == {**job.data, "subject": "New subject"}  # the address kept its real value
    assert audit_entries(1, None)[0].action == "job.edit"


def test_snooze_and_cancel_from_a_jobs_page(client, stack, auth_headers, later):
    _, jobs = later
    csrf = signed_in(client, auth_headers)
    store = stack.app.extensions["jobs"].store
    delayed = store.keys.queue("email", "delayed")
    due = store.redis.zscore(delayed, jobs[1].id)
    assert (
        client.post(f"/admin/ui/jobs/{jobs[1].id}/snooze", data={"csrf_token": csrf, "seconds": "7200"}).status_code
        == 302
    )
    snoozed = get_job(jobs[1].id)
    assert snoozed.state == "delayed" and audit_entries(1, None)[0].action == "job.snooze"
    assert store.redis.zscore(delayed, jobs[1].id) >= due + 3_500_000  # due an hour later than it was
    client.post(f"/admin/ui/jobs/{jobs[1].id}/cancel", data={"csrf_token": csrf, "reason": "test"})
    assert get_job(jobs[1].id).state == "cancelled" and get_job(jobs[1].id).cancel_reason == "test"
    again = client.post(
        f"/admin/ui/jobs/{jobs[1].id}/snooze", data={"csrf_token": csrf, "seconds": "60"}, follow_redirects=True
    )
    assert "Not snoozed" in again.get_data(as_text=True)


def test_bulk_actions_need_a_filter_and_a_confirmation(client, stack, auth_headers, later):
    owner, jobs = later
    csrf = signed_in(client, auth_headers)
    unfiltered = client.post(
        "/admin/ui/jobs/bulk", data={"csrf_token": csrf, "action": "delete"}, follow_redirects=True
    )
    assert "Choose a filter first" in unfiltered.get_data(as_text=True)
    asked = client.post("/admin/ui/jobs/bulk", data={"csrf_token": csrf, "action": "cancel", "owner": owner})
    assert 'data-matched="3"' in asked.get_data(as_text=True)
    assert all(get_job(job.id).state == "delayed" for job in jobs)  # a dry run
    done = client.post(
        "/admin/ui/jobs/bulk",
        data={"csrf_token": csrf, "action": "cancel", "owner": owner, "confirmed": "1"},
        follow_redirects=True,
    )
    assert f"3 of 3 jobs matching owner {owner} cancelled" in done.get_data(as_text=True)
    assert all(get_job(job.id).state == "cancelled" for job in jobs)


def test_a_viewer_may_not_act(client, stack, auth_headers, later):
    owner, jobs = later
    csrf = signed_in(client, auth_headers, "viewer", "9")
    for path, form in [
        (f"/admin/ui/jobs/{jobs[0].id}/cancel", {}),
        (f"/admin/ui/jobs/{jobs[0].id}/snooze", {"seconds": "60"}),
        (f"/admin/ui/jobs/{jobs[0].id}/edit", {"f.subject": "x"}),
        ("/admin/ui/jobs/bulk", {"action": "cancel", "owner": owner}),
        ("/admin/ui/jobs/bulk", {"action": "cancel", "owner": owner, "confirmed": "1"}),
    ]:
        assert client.post(path, data={"csrf_token": csrf, **form}).status_code == 403, path
    assert all(get_job(job.id).state == "delayed" and get_job(job.id).data == job.data for job in jobs)
    page = client.get(f"/admin/ui/jobs?owner={owner}").get_data(as_text=True)
    assert len(rows(page)) == 3 and 'id="bulk' not in page
