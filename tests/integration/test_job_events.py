"""Live job events over HTTP (Server-Sent Events from the queues' Redis streams), progress and
log lines as a job's owner sees them, and wait_until_finished, against a real worker."""

import http.client
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from werkzeug.serving import make_server

from jobqueue.store import now_ms
from rideshare.jobs import add_email_job, cancel_job, get_job, get_queue, wait_until_finished
from tests.conftest import own_app

pytestmark = pytest.mark.integration


def mail(tag: str = "events") -> dict:
    return {"to": f"{tag}-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello"}


@dataclass
class Message:
    event: str
    data: dict
    id: str | None
    arrived: float  # time.time() when its blank line came


@pytest.fixture(scope="module")
def server(stack) -> Iterator[str]:
    """The stack's app served over real HTTP by a threaded server, as gunicorn's threads serve it."""
    httpd = make_server("127.0.0.1", 0, stack.app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(5)


def open_stream(server: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    host, port = server.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    connection.request("GET", path, headers=headers)
    return connection.getresponse()


def messages(response: http.client.HTTPResponse) -> Iterator[Message]:
    """The stream's messages as they arrive (comments and the retry hint skipped), until it closes."""
    fields: dict[str, str] = {}
    while True:
        line = response.readline()
        if not line:
            return
        line = line.decode().rstrip("\n")
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if "data" in fields:
            yield Message(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"), time.time())
        fields = {}


def test_a_jobs_stream_shows_each_move_within_a_second_and_closes_when_it_finishes(app, stack, server, auth_headers):
    data = mail()
    stack.services.smtp.handler.plan(data["to"], ("stall", 0.5))
    job = add_email_job(data, owner="501", delay=800)
    response = open_stream(server, f"/jobs/{job.id}/events", auth_headers("501"))
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")

    received = list(messages(response))
    closed = time.time()
    states = [m for m in received if m.event == "state"]
    assert states[0].data["event"] == "snapshot" and states[0].data["state"] == "delayed"
    assert [m.data["state"] for m in states[1:]] == ["waiting", "active", "completed"]
    for message in states[1:]:
        assert message.arrived - message.data["at"] / 1000 < 1.0, message  # delivered within a second
        assert message.id and message.id.split("-")[0] == str(message.data["at"])
    assert received[-1].event == "end" and received[-1].data == {
        "jobId": job.id,
        "reason": "finished",
        "state": "completed",
    }
    assert closed - received[-1].arrived < 1.0  # closed right after the end message
    assert not [m for m in received if m.data.get("jobId") not in (job.id, None)]  # only this job's


def test_a_stream_resumes_after_last_event_id_and_is_only_for_its_owner(app, client, stack, auth_headers):
    job = add_email_job(mail(), owner="502", delay=60_000)
    store = get_queue("email").store
    before = store.last_event_id("email")
    get_queue("email").snooze(job.id, 120_000)

    owner = auth_headers("502")
    resumed = client.get(f"/jobs/{job.id}/events?timeout=1", headers={**owner, "Last-Event-ID": before})
    text = resumed.get_data(as_text=True)
    assert "snapshot" not in text  # a resumed stream goes on from its id
    assert '"event":"defer"' in text and text.rstrip().endswith('"reason":"timeout"}')

    assert client.get(f"/jobs/{job.id}/events", headers=auth_headers("503")).status_code == 404
    assert client.get("/jobs/nope/events", headers=owner).status_code == 404
    assert client.get(f"/jobs/{job.id}/events").status_code == 401
    bad = client.get(f"/jobs/{job.id}/events", headers={**owner, "Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json["errors"]["headers"]
    assert client.get(f"/jobs/{job.id}/events?timeout=0", headers=owner).status_code == 422
    assert client.get(f"/jobs/{job.id}/events?since=1", headers=owner).status_code == 422

    cancel_job(job.id, "test over")
    admin = client.get(f"/jobs/{job.id}/events", headers=auth_headers("1", "admin"))
    text = admin.get_data(as_text=True)  # a finished job: its state, then the end at once
    assert '"state":"cancelled"' in text and '"reason":"finished"' in text


def test_the_owner_sees_progress_and_log_lines_masked_as_they_happen(stack, own_queues_env, auth_headers):
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"progress{secrets.token_hex(3)}"}
    owner = auth_headers("504")
    with own_app(env) as app:
        client = app.test_client()
        store = app.extensions["jobs"].store
        job = add_email_job(mail("progress"), owner="504")
        stream = client.get(f"/jobs/{job.id}/events?timeout=5", headers=owner, buffered=False)
        chunks = iter(stream.response)
        assert next(chunks).startswith(b"retry:")
        assert b'"state":"waiting"' in next(chunks)

        # No worker here: the test takes the job and reports as a task does.
        _, [taken] = store.fetch("email", 1, "test-worker", max_stalls=1)
        taken.store = store
        taken.update_progress({"step": "sending", "cardNumber": "4242424242424242"})
        taken.log("sent to rider@example.com: 250 OK")
        seen = client.get(f"/jobs/{job.id}", headers=owner).json
        assert seen["state"] == "active"
        assert seen["progress"] == {"step": "sending", "cardNumber": "***"}
        assert [line["line"] for line in seen["logs"]] == ["sent to r***@example.com: 250 OK"]
        assert seen["logs"][0]["attempt"] == 1
        store.finish(taken, "complete", score=now_ms(), attempt={"attempt": 1}, duration_ms=5.0)

        text = b"".join(chunks).decode()
        assert "4242" not in text and "rider@example.com" not in text
        kinds = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
        assert kinds == ["state", "progress", "log", "state", "end"]
        assert '"progress":{"step":"sending","cardNumber":"***"}' in text

        detail = client.get(f"/admin/jobs/{job.id}", headers=auth_headers("1", "admin")).json
        assert detail["progress"]["cardNumber"] == "***" and detail["logs"][0]["line"].startswith("sent to r***@")
        assert [e["event"] for e in detail["events"]] == ["add", "fetch", "progress", "log", "complete"]
        assert detail["tags"] == ["owner:504"]


def test_admin_events_stream_a_queue_and_streams_are_bounded_in_number(app, stack, server, auth_headers):
    admin = auth_headers("1", "admin")
    email = open_stream(server, "/admin/events?queue=email&timeout=2", admin)
    every = open_stream(server, "/admin/events?timeout=1", auth_headers("9", "viewer"))
    assert (email.status, every.status) == (200, 200)
    third = open_stream(server, "/admin/events?timeout=1", admin)  # EVENT_STREAMS_MAX is 2 in the tests' stack
    assert third.status == 503 and third.getheader("Retry-After") == "5"
    third.read()

    stream = messages(email)
    first = next(stream)
    assert first.event == "counts" and set(first.data) == {"email"}
    job = add_email_job(mail("queue-events"))
    started = time.time()
    received = [m for m in stream if m.data.get("jobId") == job.id]
    assert [m.data["event"] for m in received if m.event == "state"] == ["add", "fetch", "complete"]
    assert all(m.data["queue"] == "email" for m in received)
    assert all(m.arrived - m.data["at"] / 1000 < 1.0 for m in received)
    assert time.time() - started < 4  # it ended on its timeout
    assert received[0].id.startswith("email:")
    assert [m.event for m in messages(every)][-1] == "end"

    again = open_stream(server, "/admin/events?timeout=1", admin)  # the slots are free again
    assert again.status == 200 and [m.event for m in messages(again)] == ["counts", "end"]
    assert open_stream(server, "/admin/events?queue=nope", admin).status == 422

    # EventSource's reconnect: from the id of the job's add, its later events again, no counts.
    resumed = open_stream(server, "/admin/events?queue=email&timeout=1", {**admin, "Last-Event-ID": received[0].id})
    replayed = list(messages(resumed))
    assert "counts" not in [m.event for m in replayed]
    assert [m.data["event"] for m in replayed if m.data.get("jobId") == job.id and m.event == "state"] == [
        "fetch",
        "complete",
    ]


def test_wait_until_finished_reads_the_stream(app, stack):
    job = add_email_job(mail("wait"))
    assert wait_until_finished(job.id, 10).state == "completed"

    pending = add_email_job(mail("wait"), delay=60_000)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_until_finished(pending.id, 0.3)
    assert time.monotonic() - started < 1.5

    def cancel_soon() -> None:
        time.sleep(0.2)
        with app.app_context():
            cancel_job(pending.id, "no longer wanted")

    threading.Thread(target=cancel_soon).start()
    finished = wait_until_finished(pending.id, 5)
    assert (finished.state, finished.cancel_reason) == ("cancelled", "no longer wanted")
    assert get_job(pending.id).state == "cancelled"
    with pytest.raises(LookupError):
        wait_until_finished("nope", 1)
