"""Deduplication (issue 15) against a real worker: each mode's window, a cancelled job's key, the counter.

A job added with deduplicate={"id", "ttl", "mode"} while a job of the same key holds it
is not stored: the add answers the holder. What each mode holds the key for, and what a
later add does, is read here from the job store and from the SMTP sink (what was sent).
"""

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask

from devstack.processes import stop
from jobqueue.store import JobRecord, JobStore, now_ms
from rideshare.jobs import add_email_job, get_queue
from tests.conftest import own_app, start_worker, wait_for_jobs
from tests.support.smtp import ScriptedHandler

# The job store's moves, through a real worker: they never touch SQL, so once, on SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sqlite_only")]


@dataclass
class Mailer:
    app: Flask
    log: Path
    tag: str

    @property
    def store(self) -> JobStore:
        return self.app.extensions["jobs"].store

    def mail(self, subject: str, to: str | None = None) -> dict:
        return {"to": to or f"{self.tag}-{secrets.token_hex(3)}@example.com", "subject": subject, "text": "t"}

    def wait(self, job_id: str, states: tuple[str, ...] = ("completed",), timeout: float = 15) -> JobRecord:
        [job] = wait_for_jobs(self.store, [job_id], states, timeout, [self.log])
        return job

    def deduplicated(self) -> int:
        return self.store.metrics().get("email:deduplicated", 0)

    def subjects_sent(self, smtp: ScriptedHandler, to: str) -> list[str]:
        return [m.message["Subject"] for m in smtp.messages_to(to)]


@pytest.fixture
def mailer(stack, own_queues_env, tmp_path) -> Iterator[Mailer]:
    """An email worker (threads, 4) on queues of this test's own."""
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"dedup{secrets.token_hex(3)}"}
    log = tmp_path / "worker.log"
    with own_app(env) as app:
        worker = start_worker(env, log, queues="email", pool="threads", concurrency=4)
        try:
            yield Mailer(app, log, env["JOB_KEY_PREFIX"])
        finally:
            stop(worker)


def test_simple_holds_the_key_until_its_job_is_final(stack, mailer):
    smtp = stack.services.smtp.handler
    key = {"id": f"k-{secrets.token_hex(3)}", "mode": "simple"}
    to = f"{mailer.tag}-simple@example.com"
    smtp.plan(to, ("stall", 0.6))
    first = add_email_job(mailer.mail("first", to), deduplicate=key)
    again = add_email_job(mailer.mail("again", to), deduplicate=key)
    assert again.id == first.id and again.state in ("waiting", "active")
    mailer.wait(first.id, ("active",))
    running = add_email_job(mailer.mail("while it runs", to), deduplicate=key)
    assert (running.id, running.state) == (first.id, "active")
    assert mailer.wait(first.id).state == "completed"

    # Final: the key is free, and the next add is a job of its own.
    after = add_email_job(mailer.mail("after", to), deduplicate=key)
    assert after.id != first.id
    mailer.wait(after.id)
    assert mailer.subjects_sent(smtp, to) == ["first", "after"]
    assert mailer.deduplicated() == 2


def test_throttle_ignores_adds_for_ttl_even_after_the_job_completed(stack, mailer):
    smtp = stack.services.smtp.handler
    ttl = 2000
    key = {"id": f"k-{secrets.token_hex(3)}", "mode": "throttle", "ttl": ttl}
    to = f"{mailer.tag}-throttle@example.com"
    added = time.monotonic()
    first = add_email_job(mailer.mail("first", to), deduplicate=key)
    mailer.wait(first.id)
    within = add_email_job(mailer.mail("within", to), deduplicate=key)
    assert time.monotonic() - added < ttl / 1000, "the check ran after the window: it proves nothing"
    assert within.id == first.id and within.state == "completed"

    time.sleep(max(added + ttl / 1000 + 0.1 - time.monotonic(), 0))
    after = add_email_job(mailer.mail("after", to), deduplicate=key)
    assert after.id != first.id
    mailer.wait(after.id)
    assert mailer.subjects_sent(smtp, to) == ["first", "after"]
    assert mailer.deduplicated() == 1


def test_debounce_runs_one_job_with_the_last_data_a_delay_after_the_last_add(stack, mailer):
    smtp = stack.services.smtp.handler
    delay = 1000
    key = {"id": f"k-{secrets.token_hex(3)}", "mode": "debounce", "ttl": delay}
    to = f"{mailer.tag}-debounce@example.com"
    ids, last_add = [], 0
    for n in range(3):
        if n:
            time.sleep(0.3)
        last_add = now_ms()
        ids.append(add_email_job(mailer.mail(f"version {n}", to), delay=delay, deduplicate=key).id)
    assert len(set(ids)) == 1, ids
    job = mailer.wait(ids[0], timeout=10)

    assert job.data["subject"] == "version 2"
    # Each add started the delay again: not 1 s after the first add (0.6 s before the last).
    started = job.processed_on - last_add
    print(f"\ndebounce: ran {started} ms after the last add (delay {delay} ms)")
    assert delay <= started < delay + 500, started
    assert mailer.subjects_sent(smtp, to) == ["version 2"]
    assert mailer.store.metrics()["email:added"] == 1
    assert mailer.deduplicated() == 2


def test_keep_last_if_active_keeps_one_follow_up_with_the_last_data(stack, mailer):
    smtp = stack.services.smtp.handler
    key = {"id": f"k-{secrets.token_hex(3)}", "mode": "keep_last_if_active"}
    to = f"{mailer.tag}-keeplast@example.com"
    smtp.plan(to, ("stall", 1.0))
    first = add_email_job(mailer.mail("first", to), deduplicate=key)
    mailer.wait(first.id, ("active",))
    later = [add_email_job(mailer.mail(f"update {n}", to), deduplicate=key) for n in range(1, 6)]

    follow_up = later[0]
    assert follow_up.id != first.id and follow_up.state == "grouped", follow_up
    assert {job.id for job in later} == {follow_up.id}
    first, follow_up = wait_for_jobs(mailer.store, [first.id, follow_up.id], ("completed",), 15, [mailer.log])

    assert follow_up.data["subject"] == "update 5"
    assert follow_up.processed_on >= first.finished_at, (first.finished_at, follow_up.processed_on)
    assert mailer.subjects_sent(smtp, to) == ["first", "update 5"]
    assert mailer.store.metrics()["email:added"] == 2
    assert mailer.deduplicated() == 4


def test_a_cancelled_job_frees_its_simple_key_at_once(stack, mailer):
    smtp = stack.services.smtp.handler
    key = {"id": f"k-{secrets.token_hex(3)}", "mode": "simple"}
    to = f"{mailer.tag}-cancel@example.com"
    held = add_email_job(mailer.mail("held", to), delay=60_000, deduplicate=key)
    assert add_email_job(mailer.mail("refused", to), deduplicate=key).id == held.id
    assert get_queue("email").cancel(held.id, "changed my mind") == "cancelled"

    after = add_email_job(mailer.mail("after", to), deduplicate=key)
    assert after.id != held.id
    mailer.wait(after.id)
    assert mailer.store.get(held.id).state == "cancelled"
    assert mailer.subjects_sent(smtp, to) == ["after"]
    assert mailer.deduplicated() == 1
