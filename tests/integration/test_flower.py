"""Flower against the live worker, through Flower's own HTTP API with basic auth."""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from devstack.processes import free_port, port_open, stop, wait_for_port
from rideshare.jobs import add_email_job
from tests.conftest import REPO
from tests.support.rabbitmq import RABBITMQ_HOST

pytestmark = pytest.mark.integration


def get(url: str, auth: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, None


@pytest.fixture(scope="module")
def flower(stack, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "flower", "--address=127.0.0.1", f"--port={port}"],
            cwd=REPO,
            env={**os.environ, **stack.env, "FLOWER_BASIC_AUTH": "ops:s3cret"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_flower_shows_the_worker_and_the_three_queues(app, stack, flower):
    assert get(f"{flower}/api/workers")[0] == 401

    deadline = time.monotonic() + 30
    workers: dict = {}
    while time.monotonic() < deadline:
        status, workers = get(f"{flower}/api/workers?refresh=1", "ops:s3cret")
        if status == 200 and workers:
            break
        time.sleep(0.5)
    [(name, info)] = [(n, i) for n, i in workers.items() if n.startswith("test-")]
    consumed = {q["name"] for q in info["active_queues"]}
    assert consumed == {"email", "analytics", "payment"}

    # Workers send task events once Flower has turned them on (at start and every 5 s
    # after), so a job run after that shows up in Flower as it runs.
    deadline = time.monotonic() + 30
    info: dict = {}
    while time.monotonic() < deadline and info.get("state") != "SUCCESS":
        job = add_email_job({"to": "flower@example.com", "subject": "Hi", "text": "hello"})
        stack.wait_for_job(job.id)
        until = time.monotonic() + 3
        while time.monotonic() < until:
            status, info = get(f"{flower}/api/task/info/{job.id}", "ops:s3cret")
            if status == 200 and info.get("state") == "SUCCESS":
                break
            info = info if isinstance(info, dict) else {}
            time.sleep(0.3)
    assert info["name"] == "email.send"
    assert info["state"] == "SUCCESS"


def test_flower_shows_the_queue_lengths(app, stack, flower):
    if stack.env["BROKER_URL"].startswith("amqp") and not port_open(RABBITMQ_HOST, 15672):
        # Flower reads RabbitMQ's queue lengths from the management plugin's HTTP API
        # (FLOWER_BROKER_API); without it the list comes back empty.
        pytest.skip("queue lengths on RabbitMQ need the management plugin (port 15672), not enabled here")
    status, lengths = get(f"{flower}/api/queues/length", "ops:s3cret")
    assert status == 200
    assert {q["name"] for q in lengths["active_queues"]} == {"email", "analytics", "payment"}


def get_page(url: str, auth: str) -> tuple[int, str]:
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, ""


def test_flower_opens_a_finished_job_by_its_id(client, stack, flower):
    # Flower hears task events only once its event receiver is subscribed; it has once it
    # has heard this stack's worker (its heartbeats are events too).
    deadline = time.monotonic() + 30
    alive: dict = {}
    while time.monotonic() < deadline and not any(n.startswith("test-") and up for n, up in alive.items()):
        status, alive = get(f"{flower}/api/workers?status=1", "ops:s3cret")
        alive = alive if status == 200 and isinstance(alive, dict) else {}
        time.sleep(0.3)
    assert any(n.startswith("test-") and up for n, up in alive.items()), alive

    # One welcome email through the API, as a client queues it (1 s delay), run to the end.
    response = client.post("/send-welcome-email", json={"email": "flower-page@example.com", "name": "Flo"})
    assert response.status_code == 202, response.json
    job_id = response.json["jobId"]
    assert stack.wait_for_job(job_id).state == "completed"

    # The task-succeeded event is sent just after the job is stored as completed.
    deadline = time.monotonic() + 10
    status, info = get(f"{flower}/api/task/info/{job_id}", "ops:s3cret")
    while time.monotonic() < deadline and not (status == 200 and info.get("state") == "SUCCESS"):
        time.sleep(0.2)
        status, info = get(f"{flower}/api/task/info/{job_id}", "ops:s3cret")
    assert status == 200, f"Flower does not know job {job_id}"
    assert (info["uuid"], info["name"], info["state"]) == (job_id, "email.send", "SUCCESS")
    assert info["worker"].startswith("test-")

    status, page = get_page(f"{flower}/task/{job_id}", "ops:s3cret")
    assert status == 200
    assert job_id in page and "email.send" in page and "SUCCESS" in page
    assert get_page(f"{flower}/task/{job_id}", "ops:wrong")[0] == 401
