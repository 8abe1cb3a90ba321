"""Groups (issue 15) against real workers: a group's jobs run one at a time in the order
added, groups run side by side and take turns, and a dead worker holds its group no
longer than the job's lease.

Order and overlap are read from the queue's event stream, where every move is an entry
in the order the store made it: a job's start (event fetch) and its end (a final state).
The job records' taken and finished times give the durations.
"""

import os
import secrets
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask

from devstack.processes import stop
from jobqueue.lifecycle import FINISHED
from jobqueue.limits import GroupLimits
from jobqueue.options import JobOptions
from jobqueue.queue import lease_ms
from jobqueue.store import JobStore, now_ms
from rideshare.auth import issue_token
from rideshare.jobs import add_email_job, get_queue
from rideshare.rides.service import request_ride
from tests.conftest import own_app, wait_for_jobs
from tests.support.flow import most_active, start_workers

# Groups are the job store's; the payments here touch SQL the same way on either database: once, on SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sqlite_only")]


def moves(store: JobStore, queue: str, ids: list[str]) -> list[tuple[str, str]]:
    """Each job of ids starting ('start', id: taken from waiting) and ending ('end', id: a
    final state) or stalling ('stall', id: its lease ran out), in the store's order."""
    wanted = set(ids)
    out = []
    for _, entry in store.redis.xrange(store.keys.queue(queue, "events")):
        if entry["id"] not in wanted:
            continue
        if entry["event"] == "fetch":
            out.append(("start", entry["id"]))
        elif entry["event"] == "stall":
            out.append(("stall", entry["id"]))
        elif entry["state"] in FINISHED:
            out.append(("end", entry["id"]))
    return out


def one_at_a_time(ids: list[str]) -> list[tuple[str, str]]:
    """The moves of jobs that ran one after another, in this order, once each."""
    return [step for job_id in ids for step in (("start", job_id), ("end", job_id))]


@contextmanager
def running(env: dict[str, str], tmp_path: Path, names: list[str], **options: object) -> Iterator[list[Path]]:
    """Workers started side by side for the block; their logs."""
    procs = start_workers(env, tmp_path, names, **options)
    try:
        yield [tmp_path / f"{name}.log" for name in names]
    finally:
        for proc in procs:
            stop(proc)


@pytest.fixture
def env(own_queues_env) -> dict[str, str]:
    return {**own_queues_env, "JOB_KEY_PREFIX": f"groups{secrets.token_hex(3)}", "JOB_KEEP_COMPLETED": "10000"}


def mail(tag: str) -> dict:
    return {"to": f"{tag}-{secrets.token_hex(4)}@example.com", "subject": "s", "text": "t"}


def post_payments_at_once(app: Flask, ride_id: int, count: int) -> list[str]:
    """count POST /payments for one ride, from count threads released together; the job ids."""
    headers = {"Authorization": f"Bearer {issue_token('42', 'user')}"}
    gate = threading.Barrier(count)
    answers: list = [None] * count

    def post(n: int) -> None:
        client = app.test_client()
        gate.wait()
        answers[n] = client.post(
            "/payments",
            json={"amount": "12.00", "paymentMethod": "pm_card_visa", "rideId": ride_id},
            headers={**headers, "Idempotency-Key": f"parallel-{n}-{secrets.token_hex(4)}"},
        )

    threads = [threading.Thread(target=post, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a.status_code for a in answers] == [202] * count, [a.get_json() for a in answers if a.status_code != 202]
    return [a.get_json()["jobId"] for a in answers]


def test_parallel_payments_for_one_ride_run_one_at_a_time_in_the_order_accepted(stack, env, tmp_path):
    count = 50
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        ride = request_ride("42", "d-1", "Main St", "Airport")
        with running(env, tmp_path, ["p1", "p2"], queues="payment", pool="threads", concurrency=4) as logs:
            ids = post_payments_at_once(app, ride.id, count)
            jobs = wait_for_jobs(store, ids, ("completed", "failed"), 60, logs)
        steps = moves(store, "payment", ids)

    # The order the API accepted them: the order the store added them (the group's sequence).
    accepted = [job.id for job in sorted(jobs, key=lambda job: int(job.raw["gseq"]))]
    ran = [job_id for step, job_id in steps if step == "start"]
    took = (max(j.finished_at for j in jobs) - min(j.processed_on for j in jobs)) / 1000
    by_gseq = sorted(jobs, key=lambda job: int(job.raw["gseq"]))
    gaps = [b.processed_on - a.finished_at for a, b in zip(by_gseq, by_gseq[1:], strict=False)]
    print(
        f"\none ride, {count} parallel POSTs: ran in the order accepted {ran == accepted},"
        f" one at a time {steps == one_at_a_time(accepted)}; {took:.1f} s in all, a turn takes"
        f" median {statistics.median(gaps)} ms from one's end to the next one's start;"
        f" workers {sorted({j.worker.split('-')[0] for j in jobs})}"
    )
    assert [job.state for job in jobs] == ["completed"] * count, [j.failed_reason for j in jobs]
    assert {job.raw["group"] for job in jobs} == {f"ride:{ride.id}"}
    assert ran == accepted
    assert steps == one_at_a_time(accepted)


JOB_S = 0.2


def test_twenty_groups_run_side_by_side(stack, env, tmp_path):
    smtp = stack.services.smtp.handler
    groups, per_group = 20, 10
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        jobs = []
        for n in range(groups * per_group):  # added round the groups, as a busy API would
            data = mail(env["JOB_KEY_PREFIX"])
            smtp.plan(data["to"], ("stall", JOB_S))
            jobs.append(add_email_job(data, group=f"ride:{n % groups}"))
        with running(env, tmp_path, ["w1", "w2"], queues="email", pool="threads", concurrency=16) as logs:
            jobs = wait_for_jobs(store, [job.id for job in jobs], ("completed",), 60, logs)
        steps = moves(store, "email", [job.id for job in jobs])
        at_once = most_active(store, "email")

    took = (max(j.finished_at for j in jobs) - min(j.processed_on for j in jobs)) / 1000
    ideal = per_group * JOB_S
    print(
        f"\n{groups} groups x {per_group} jobs of {JOB_S} s, 2 workers x 16 threads: {took:.2f} s"
        f" (20-way parallel: {ideal:.1f} s); most at once {at_once}"
    )
    for g in range(groups):
        mine = [job.id for job in jobs if job.raw["group"] == f"ride:{g}"]
        assert [s for s in steps if s[1] in set(mine)] == one_at_a_time(mine), f"ride:{g}"
    assert 16 <= at_once <= groups
    assert took < 2 * ideal


def test_a_group_of_1000_added_first_does_not_hold_up_another_groups_job(stack, env, tmp_path):
    smtp = stack.services.smtp.handler
    big, slots = 1000, 8
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        queue = get_queue("email")
        # The big group may use every slot of the worker: the other job has to be let in.
        queue.flow.set_group("ride:big", GroupLimits(concurrency=slots))
        to = f"{env['JOB_KEY_PREFIX']}-big@example.com"
        smtp.plan(to, *[("stall", JOB_S)] * big)
        queue.add_bulk([{"to": to, "subject": f"big {n}", "text": "t"} for n in range(big)], group="ride:big")
        with running(env, tmp_path, ["w1"], queues="email", pool="threads", concurrency=slots) as logs:
            time.sleep(1.0)
            data = mail(env["JOB_KEY_PREFIX"])
            smtp.plan(data["to"], ("stall", JOB_S))
            added = now_ms()
            other = add_email_job(data, group="ride:other")
            other = wait_for_jobs(store, [other.id], ("completed",), 30, logs)[0]
            left = store.counts("email")
        at_once = most_active(store, "email")
    waited = other.processed_on - added
    print(
        f"\na group of {big} ({slots} at once) added first: another group's job started {waited} ms after"
        f" it was added ({waited / 1000 / JOB_S:.1f} job-times); the big group still had"
        f" {left['grouped'] + left['waiting']} to go"
    )
    # The big group had every slot of the worker, and most of its jobs still to go.
    assert at_once == slots
    assert left["grouped"] > big - 100, left
    assert waited <= 5 * JOB_S * 1000


def test_a_worker_killed_mid_job_holds_its_group_no_longer_than_the_lease(stack, env, tmp_path):
    smtp = stack.services.smtp.handler
    timeout = 2000
    lease = lease_ms(JobOptions(timeout=timeout))
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        first, *rest = [mail(env["JOB_KEY_PREFIX"]) for _ in range(3)]
        # The first send hangs at the sink well past the test: its worker dies in it.
        smtp.plan(first["to"], ("stall", 120))
        jobs = [add_email_job(data, group="ride:kill", timeout=timeout) for data in (first, *rest)]
        names = ["w1", "w2"]
        procs = start_workers(env, tmp_path, names, queues="email", pool="threads", concurrency=4)
        logs = [tmp_path / f"{name}.log" for name in names]
        try:
            taken = wait_for_jobs(store, [jobs[0].id], ("active",), 15, logs)[0]
            victim = names.index(taken.worker.split("-")[0])
            os.kill(procs[victim].pid, signal.SIGKILL)
            killed = now_ms()
            procs[victim].wait(10)
            done = wait_for_jobs(store, [job.id for job in jobs], ("completed",), lease / 1000 + 15, logs)
        finally:
            for proc in procs:
                stop(proc)
        steps = moves(store, "email", [job.id for job in jobs])

    again, second, third = done
    blocked = second.processed_on - killed
    print(
        f"\nworker {names[victim]} killed {killed - taken.processed_on} ms into the group's first job;"
        f" lease {lease} ms from its start: the job was taken again {again.processed_on - taken.processed_on} ms"
        f" after its first start, by {again.worker.split('-')[0]}, and the group's next job started"
        f" {blocked} ms after the kill"
    )
    ids = [job.id for job in jobs]
    assert steps == [("start", ids[0]), ("stall", ids[0]), *one_at_a_time(ids)]
    assert (again.attempts, again.stalls) == (2, 1)
    assert again.worker != taken.worker
    assert again.processed_on >= taken.processed_on + lease
    assert blocked <= lease + 2000
    assert len(smtp.messages_to(first["to"])) == 1
