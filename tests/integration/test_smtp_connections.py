"""SMTP connections are kept between messages, and replaced when the server has closed them."""

import secrets
import time

import pytest

from devstack.processes import stop
from rideshare.jobs import add_email_job
from tests.conftest import own_app, start_worker, wait_for_jobs

pytestmark = pytest.mark.integration


def test_one_connection_carries_many_messages_and_a_closed_one_is_replaced(stack, own_queues_env, tmp_path):
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"conn{secrets.token_hex(3)}", "SMTP_MAX_MESSAGES_PER_CONNECTION": "3"}
    smtp = stack.services.smtp.handler
    tag = env["JOB_KEY_PREFIX"]
    log = tmp_path / "worker.log"
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        # One pool process, so one connection at a time.
        worker = start_worker(env, log, queues="email", concurrency=1, name=f"conn-{tag}@%h")
        try:
            addresses = [f"{tag}-{i}@example.com" for i in range(7)]
            smtp.plan(addresses[1], ("hang up",))  # accepted, then the server closes the connection
            jobs = []
            for address in addresses:  # one after the other, so each finds the previous one's connection
                job = add_email_job({"to": address, "subject": "s", "text": "t"}, remove_on_complete=False)
                jobs += wait_for_jobs(store, [job.id], timeout=30, logs=[log])
                if address == addresses[1]:
                    # The server hangs up 50 ms after accepting: the next job, which can start
                    # within a few ms now, must find the connection already closed.
                    time.sleep(0.3)
        finally:
            stop(worker)
    assert [job.state for job in jobs] == ["completed"] * 7
    assert all(job.attempts == 1 for job in jobs), "a closed connection is replaced, not retried later"
    peers = [smtp.messages_to(a)[0].peer for a in addresses]
    assert [len(smtp.messages_to(a)) for a in addresses] == [1] * 7
    # 0 and 1 share a connection; the server hangs up after 1; 2, 3, 4 share the next one
    # (3 messages at most); 5 and 6 the one after.
    assert peers[0] == peers[1]
    assert peers[2] == peers[3] == peers[4] != peers[1]
    assert peers[5] == peers[6] != peers[4]
