"""Job control through the admin API and the CLI, against real workers: cancel, snooze, edit,
bulk actions, indexed search with cursors, queue history, and the viewer's refusals."""

import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from click.testing import Result

from rideshare.jobs import add_email_job, get_job
from rideshare.jobs.control import audit_entries
from tests.conftest import own_app, start_worker, stop

pytestmark = pytest.mark.integration


def mail(tag: str = "ctl") -> dict:
    return {"to": f"{tag}-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello"}


@pytest.fixture
def admin(auth_headers) -> dict[str, str]:
    return auth_headers("1", "admin")


def test_a_cancelled_job_never_runs_even_when_a_worker_starts_afterwards(stack, own_queues_env, tmp_path, auth_headers):
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"cancel{secrets.token_hex(3)}"}
    admin, owner = auth_headers("1", "admin"), auth_headers("77")
    with own_app(env) as app:
        client = app.test_client()
        waiting = add_email_job(mail("cancel-w"), owner="77")
        delayed = add_email_job(mail("cancel-d"), owner="77", delay=500)

        # No worker consumes these queues: the backlog is flagged.
        health = client.get("/admin/queues/email/history?minutes=2", headers=admin).json
        assert health["counts"]["waiting"] == 1 and health["workers"] == []
        assert "no live worker" in health["warning"]
        assert health["oldestWaitingMs"] >= 0

        for job in (waiting, delayed):
            response = client.post(f"/admin/jobs/{job.id}/cancel", json={"reason": "rider cancelled"}, headers=admin)
            assert response.status_code == 200, response.json
            assert (response.json["state"], response.json["cancelReason"]) == ("cancelled", "rider cancelled")
            assert [e["event"] for e in response.json["events"]][-1] == "cancel"
        seen = client.get(f"/jobs/{waiting.id}", headers=owner).json
        assert (seen["state"], seen["cancelReason"]) == ("cancelled", "rider cancelled")

        again = client.post(f"/admin/jobs/{waiting.id}/cancel", json={"reason": "twice"}, headers=admin)
        assert again.status_code == 409
        assert client.post(f"/admin/jobs/{waiting.id}/snooze", json={"delayMs": 100}, headers=admin).status_code == 409
        assert client.post("/admin/jobs/nope/cancel", json={}, headers=admin).status_code == 404
        assert [e.action for e in audit_entries(2, None)] == ["job.cancel", "job.cancel"]

        worker = start_worker(
            env, tmp_path / "worker.log", queues="email", concurrency=2, name=f"c-{secrets.token_hex(3)}@%h"
        )
        try:
            sentinel = add_email_job(mail("cancel-s"))
            # The sentinel ran, and the delayed job's time came and went: the cancelled jobs stayed so.
            done = app.extensions["jobs"].store.wait_until_finished(sentinel.id, "email", 20)
            assert done.state == "completed"
            time.sleep(max(0.0, delayed.created_at / 1000 + 1.0 - time.time()))
            for job in (waiting, delayed):
                assert get_job(job.id).state == "cancelled"
                assert stack.services.smtp.handler.messages_to(job.data["to"]) == []
            finished = client.post(f"/admin/jobs/{sentinel.id}/cancel", json={"reason": "late"}, headers=admin)
            assert finished.status_code == 409 and "completed" in finished.json["message"]

            # A cancelled job can be retried: then it runs.
            assert client.post(f"/admin/jobs/{waiting.id}/retry", headers=admin).status_code == 200
            assert app.extensions["jobs"].store.wait_until_finished(waiting.id, "email", 20).state == "completed"
            assert len(stack.services.smtp.handler.messages_to(waiting.data["to"])) == 1
        finally:
            stop(worker)


def test_snooze_moves_a_delayed_job_and_edits_are_validated_and_refused_while_it_runs(app, client, stack, admin):
    job = add_email_job(mail("snooze"), delay=60_000)
    snoozed = client.post(f"/admin/jobs/{job.id}/snooze", json={"delayMs": 200}, headers=admin)
    assert snoozed.status_code == 200 and snoozed.json["state"] == "delayed"
    for body in ({"delayMs": 0}, {"delayMs": 1.5}, {"delayMs": "100"}, {}):
        assert client.post(f"/admin/jobs/{job.id}/snooze", json=body, headers=admin).status_code == 422
    assert stack.wait_for_job(job.id, timeout=10).state == "completed"  # 200 ms, not a minute

    slow = mail("edit")
    stack.services.smtp.handler.plan(slow["to"], ("stall", 1.5))
    pending = add_email_job(slow, delay=60_000)
    bad = client.put(f"/admin/jobs/{pending.id}/data", json={"data": {"to": "nobody", "text": 3}}, headers=admin)
    assert bad.status_code == 422
    assert set(bad.json["errors"]["json"]["data"]) == {"to", "subject", "text"}
    assert get_job(pending.id).data == slow
    fixed = {**slow, "subject": "Corrected"}
    edited = client.put(f"/admin/jobs/{pending.id}/data", json={"data": fixed}, headers=admin)
    assert edited.status_code == 200, edited.json
    assert edited.json["data"]["subject"] == "Corrected" and edited.json["data"]["to"] != slow["to"]  # masked
    assert get_job(pending.id).data == fixed
    assert audit_entries(1, None)[0].details["fields"] == ["subject"]

    assert client.post(f"/admin/jobs/{pending.id}/snooze", json={"delayMs": 1}, headers=admin).status_code == 200
    stack.wait_for_job(pending.id, states=("active",), timeout=10)
    running = client.put(f"/admin/jobs/{pending.id}/data", json={"data": slow}, headers=admin)
    assert running.status_code == 409
    assert client.post(f"/admin/jobs/{pending.id}/snooze", json={"delayMs": 10}, headers=admin).status_code == 409
    assert stack.wait_for_job(pending.id).state == "completed"
    assert stack.services.smtp.handler.messages_to(slow["to"])[0].message["Subject"] == "Corrected"
    assert client.put("/admin/jobs/nope/data", json={"data": fixed}, headers=admin).status_code == 404


def test_bulk_retry_of_the_failed_jobs_of_a_filter_counts_first(app, client, stack, admin):
    owner = f"bulk-{secrets.token_hex(3)}"
    failing = [mail("bulk") for _ in range(3)]
    for data in failing:
        stack.services.smtp.handler.plan(data["to"], "550 no such user")
    jobs = [add_email_job(data, owner=owner) for data in failing]
    ok = add_email_job(mail("bulk"), owner=owner)
    other = mail("bulk")
    stack.services.smtp.handler.plan(other["to"], "550 no such user")
    bystander = add_email_job(other, owner=f"{owner}-other")
    for job in [*jobs, ok, bystander]:
        stack.wait_for_job(job.id)

    body = {"action": "retry", "filter": {"owner": owner}, "dryRun": True}
    counted = client.post("/admin/jobs/bulk", json=body, headers=admin)
    assert counted.json == {"action": "retry", "dryRun": True, "matched": 3, "done": 0}
    assert {get_job(job.id).state for job in jobs} == {"failed"}
    refused = client.post("/admin/jobs/bulk", json={**body, "filter": {"ownr": owner}}, headers=admin)
    assert refused.status_code == 422

    done = client.post("/admin/jobs/bulk", json={**body, "dryRun": False}, headers=admin)
    assert done.json == {"action": "retry", "dryRun": False, "matched": 3, "done": 3}
    for job in jobs:
        assert stack.wait_for_job(job.id).state == "completed"
        assert get_job(job.id).attempts == 2
    assert get_job(bystander.id).state == "failed"  # not of the filter
    entry = audit_entries(1, None)[0]
    assert (entry.action, entry.details["done"], entry.details["filter"]) == ("jobs.bulk_retry", 3, {"owner": owner})


def test_search_by_ride_owner_state_and_q_pages_by_cursor(app, client, stack, admin):
    owner, ride, other_ride = (f"s{secrets.token_hex(3)}" for _ in range(3))
    jobs = []
    for i in range(5):
        jobs.append(
            add_email_job(mail("search"), owner=owner, tags={"rideId": ride if i < 3 else other_ride}, delay=60_000)
        )
        time.sleep(0.002)  # distinct creation times: newest first is well defined
    newest_first = [job.id for job in reversed(jobs)]

    def ids(query: str) -> list[str]:
        response = client.get(f"/admin/jobs?{query}", headers=admin)
        assert response.status_code == 200, response.json
        return [job["id"] for job in response.json["jobs"]]

    assert ids(f"rideId={ride}") == newest_first[2:]
    assert ids(f"q={other_ride}") == newest_first[:2]
    assert ids(f"q={jobs[1].id}") == [jobs[1].id]
    assert ids(f"owner={owner}&state=delayed&queue=email") == newest_first
    assert ids(f"owner={owner}&state=waiting") == []
    assert ids(f"owner={owner}&queue=payment") == []
    assert ids(f"rideId={ride}&owner=someone-else") == []
    created = datetime.fromtimestamp(jobs[2].created_at / 1000, UTC)
    assert ids(f"owner={owner}&since={created.isoformat().replace('+00:00', 'Z')}") == newest_first[:3]
    assert ids(f"owner={owner}&until={quote((created - timedelta(milliseconds=1)).isoformat())}") == newest_first[3:]

    paged, cursor = [], None
    while True:
        query = f"owner={owner}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/admin/jobs?{query}", headers=admin).json
        paged += [job["id"] for job in page["jobs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert paged == newest_first

    assert client.get("/admin/jobs?rideid=1", headers=admin).status_code == 422  # unknown parameter
    assert client.get("/admin/jobs?cursor=bm9wZQ", headers=admin).status_code == 422
    assert client.get("/admin/jobs?since=yesterday", headers=admin).status_code == 422
    other_filters = client.get(f"/admin/jobs?owner={owner}&limit=1", headers=admin).json["nextCursor"]
    assert client.get(f"/admin/jobs?cursor={other_filters}&queue=email", headers=admin).status_code == 422

    deleted = client.post("/admin/jobs/bulk", json={"action": "delete", "filter": {"owner": owner}}, headers=admin)
    assert deleted.json["matched"] == 5 and deleted.json["done"] == 5
    assert ids(f"owner={owner}") == []


def test_history_shows_the_minutes_after_jobs_ran(app, client, stack, admin):
    data = mail("history")
    stack.services.smtp.handler.plan(data["to"], "550 no")
    stack.wait_for_job(add_email_job(data).id)
    stack.wait_for_job(add_email_job(mail("history")).id)

    health = client.get("/admin/queues/email/history?minutes=5", headers=admin).json
    assert len(health["series"]) == 5
    assert health["series"][-1]["minute"] <= time.time() * 1000 < health["series"][-1]["minute"] + 60_000
    assert health["totals"]["completed"] >= 1 and health["totals"]["failed"] >= 1
    assert sum(m["completed"] for m in health["series"]) == health["totals"]["completed"]
    assert health["processingMs"]["p50"] > 0 and health["processingMs"]["p95"] >= health["processingMs"]["p50"]
    assert health["waitMs"]["p50"] is not None
    assert health["workers"] and health["warning"] is None
    assert client.get("/admin/queues/email/history?minutes=0", headers=admin).status_code == 422
    assert client.get("/admin/queues/nope/history", headers=admin).status_code == 404


def test_a_viewer_reads_but_may_not_act(app, client, stack, auth_headers):
    viewer = auth_headers("9", "viewer")
    job = add_email_job(mail("viewer"), delay=60_000)
    actions = [
        ("post", f"/admin/jobs/{job.id}/cancel", {"reason": "x"}),
        ("post", f"/admin/jobs/{job.id}/snooze", {"delayMs": 10}),
        ("put", f"/admin/jobs/{job.id}/data", {"data": job.data}),
        ("post", "/admin/jobs/bulk", {"action": "delete", "filter": {}}),
    ]
    for method, path, body in actions:
        response = getattr(client, method)(path, json=body, headers=viewer)
        assert response.status_code == 403, (path, response.json)
    assert get_job(job.id).state == "delayed"
    for path in [f"/admin/jobs?q={job.id}", "/admin/queues/email/history", f"/admin/jobs/{job.id}"]:
        assert client.get(path, headers=viewer).status_code == 200, path
    user = auth_headers("42")
    assert client.get("/admin/jobs", headers=user).status_code == 403
    assert client.post(f"/admin/jobs/{job.id}/cancel", json={}, headers=user).status_code == 403
    assert client.post(f"/admin/jobs/{job.id}/cancel", json={}).status_code == 401
    client.delete(f"/admin/jobs/{job.id}", headers=auth_headers("1", "admin"))


def test_the_cli_searches_cancels_snoozes_edits_and_runs_bulk_actions(app, stack):
    runner = app.test_cli_runner()
    owner, ride = f"cli{secrets.token_hex(3)}", f"r{secrets.token_hex(3)}"
    jobs = [add_email_job(mail("cli"), owner=owner, tags={"rideId": ride}, delay=60_000) for _ in range(3)]

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(args=["jobs", *args], input=input)

    found = run("search", "--ride-id", ride, "--json")
    assert found.exit_code == 0, found.output
    assert {j["id"] for j in json.loads(found.output)["jobs"]} == {job.id for job in jobs}
    assert run("search", "--since", "not a time").exit_code == 2

    assert run("snooze", jobs[0].id, "--delay-ms", "600000").output.strip().endswith("delayed 600000 ms")
    bad = run("edit", jobs[0].id, "--data", '{"to": "x"}')
    assert bad.exit_code == 1 and "Not a valid email address" in bad.output
    assert run("edit", jobs[0].id, "--data", json.dumps({**jobs[0].data, "subject": "New"})).exit_code == 0
    assert get_job(jobs[0].id).data["subject"] == "New"

    cancelled = run("cancel", jobs[0].id, "--reason", "from a test")
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    shown = json.loads(run("show", jobs[0].id, "--json").output)
    assert (shown["state"], shown["cancelReason"], shown["logs"]) == ("cancelled", "from a test", [])
    assert run("cancel", jobs[0].id).exit_code == 1  # finished already

    declined = run("bulk", "cancel", "--owner", owner, input="n\n")
    assert "cancel 2 jobs?" in declined.output and declined.exit_code == 1
    assert {get_job(job.id).state for job in jobs[1:]} == {"delayed"}
    confirmed = run("bulk", "cancel", "--owner", owner, input="y\n")
    assert confirmed.exit_code == 0 and "cancel: 2 of 2" in confirmed.output
    retried = json.loads(run("bulk", "retry", "--owner", owner, "--yes", "--json").output)
    assert retried == {"action": "retry", "dryRun": False, "matched": 3, "done": 3}
    for job in jobs:
        assert stack.wait_for_job(job.id).state == "completed"

    history = run("history", "--queue", "email", "--minutes", "2")
    assert history.exit_code == 0 and "processing ms p50/p95" in history.output

    added: list[str] = []

    def add_later() -> None:
        time.sleep(0.3)
        with app.app_context():
            added.append(add_email_job(mail("cli-events")).id)

    adder = threading.Thread(target=add_later)
    adder.start()
    started = time.monotonic()
    follow = run("events", "--queue", "email", "--max-seconds", "2.5")
    adder.join()
    assert follow.exit_code == 0 and 2.4 < time.monotonic() - started < 6
    lines = [line for line in follow.output.splitlines() if added[0] in line]
    assert [line.split()[3:] for line in lines][:1] == [["add", "->", "waiting"]]
    assert lines[-1].endswith("complete -> completed"), follow.output
