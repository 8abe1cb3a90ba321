"""The API process killed between its commit and its publish, many times: no payment without its job.

The API runs under gunicorn with RIDESHARE_FAULT_EXIT_AFTER_COMMIT=3: every third
publish in a worker process ends that process (os._exit, as a SIGKILL would)
after the payment, its idempotency key and its outbox row are committed and
before the job is queued. gunicorn's master starts a new worker each time.
Half the cut requests are retried at once with their Idempotency-Key; the
other half are left for the payment worker's outbox relay, then retried.
"""

import http.client
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from devstack.processes import stop
from jobqueue.worker import RELAY_INTERVAL_S
from rideshare.auth import issue_token
from rideshare.db import get_db
from rideshare.jobs.outbox import JOB_OUTBOX
from rideshare.payments.models import IdempotencyKey, Payment
from rideshare.rides.models import Ride
from tests.conftest import eventually
from tests.faults.test_worker_loss import succeeded_charges
from tests.support.api_process import start_api

pytestmark = pytest.mark.faults

REQUESTS = 48
EXIT_EVERY = 3
CUT = (http.client.HTTPException, ConnectionError, TimeoutError)


def post_payment(base: str, token: str, key: str, ride_id: int) -> tuple[int, dict] | None:
    """POST /payments once; None if the connection was cut (the process died)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
    body = {"amount": "11.00", "paymentMethod": "pm_card_visa", "rideId": ride_id}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key, "Content-Type": "application/json"}
    try:
        conn.request("POST", "/payments", body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    except CUT:
        return None
    finally:
        conn.close()


def post_until_answered(base: str, token: str, key: str, ride_id: int, timeout: float = 30) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout
    while (answer := post_payment(base, token, key, ride_id)) is None:
        assert time.monotonic() < deadline, f"{key}: no answer in {timeout} s"
        time.sleep(0.1)
    return answer


def relayed_jobs(log: str) -> int:
    """Jobs the worker's relay queued, from its outbox.relayed log lines."""
    total = 0
    for line in log.splitlines():
        if '"outbox.relayed"' in line:
            total += json.loads(line[line.index("{") :])["count"]
    return total


def test_api_killed_between_commit_and_publish_leaves_no_payment_without_its_job(rig):
    settle_ms = int(rig.env.get("JOB_OUTBOX_SETTLE_MS", 2000))
    bound_ms = settle_ms + RELAY_INTERVAL_S * 1000 + 1000
    with rig.app.app_context():
        token = issue_token("42")
        with get_db().session() as session:
            ride = Ride(rider_id="42", driver_id="d-1", pickup="A", dropoff="B")
            session.add(ride)
        ride_id = ride.id
    rig.worker("payment", concurrency=4, pool="threads")
    log = rig.tmp / "gunicorn.log"
    api, base = start_api({**os.environ, **rig.env, "RIDESHARE_FAULT_EXIT_AFTER_COMMIT": str(EXIT_EVERY)}, log)
    answered: dict[str, dict] = {}
    cut_retried: list[str] = []
    cut_left: list[str] = []

    def one(index: int) -> None:
        key = f"kill-{index}"
        answer = post_payment(base, token, key, ride_id)
        if answer is None and index % 2:
            cut_left.append(key)  # the client gave up: the relay must queue it
            return
        if answer is None:
            cut_retried.append(key)
            answer = post_until_answered(base, token, key, ride_id)
        status, payload = answer
        assert status == 202, (key, status, payload)
        answered[key] = payload

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(one, range(REQUESTS)))
        kills = log.read_text().count("exited with code 70")

        with rig.app.app_context(), get_db().session() as session:
            payments = {p.job_id: p for p in session.query(Payment).all()}
            keys = {k.key: k.payment_id for k in session.query(IdempotencyKey).all()}
        by_id = {p.id: p for p in payments.values()}
        left_stored = [key for key in cut_left if key in keys]
        # Every stored payment gets its job: at once, by a replay, or by the relay.
        jobs = rig.wait_all(list(payments), timeout=60)
        assert {job.state for job in jobs} == {"completed"}, [(j.id, j.failed_reason) for j in jobs]
        relay_ms = [
            job.created_at - int(by_id[keys[key]].created_at.timestamp() * 1000)
            for key in left_stored
            for job in jobs
            if job.id == by_id[keys[key]].job_id
        ]
        relayed = relayed_jobs(rig.workers[0].log.read_text())

        # A client that retries later with the same key gets the first request's job.
        for key in cut_left:
            status, payload = post_until_answered(base, token, key, ride_id)
            assert status == 202
            if key in keys:
                assert (payload["jobId"], payload["paymentId"]) == (by_id[keys[key]].job_id, keys[key])
            answered[key] = payload
        for key in cut_retried:
            assert answered[key]["jobId"] == by_id[keys[key]].job_id
    finally:
        stop(api)

    def outbox_rows() -> int:
        with rig.app.app_context(), get_db().session() as session:
            return session.execute(select(func.count()).select_from(JOB_OUTBOX)).scalar_one()

    with rig.app.app_context(), get_db().session() as session:
        payments = {p.job_id: p for p in session.query(Payment).all()}
    # Published rows are dropped in batches after the request; those of a process that
    # died first are dropped by a relay (their jobs were added: it adds nothing).
    outbox_left = eventually(lambda: outbox_rows() == 0, timeout=bound_ms / 1000 + 2) or outbox_rows()
    final = rig.wait_all(list(payments), timeout=60)
    charges = succeeded_charges(rig.services.localstripe_url)
    # A left request may have published before the process died (cut by the other
    # thread's exit): its job came at once. The rest waited for the relay.
    by_relay = [ms for ms in relay_ms if ms >= settle_ms]
    print(
        f"\nfault: {REQUESTS} POST /payments, API killed {kills} times between commit and publish; "
        f"{len(cut_retried)} cut requests retried at once, {len(cut_left)} left to the relay: "
        f"{len(left_stored)} of them stored, {len(by_relay)} queued by the relay "
        f"{min(by_relay, default=0)}-{max(by_relay, default=0)} ms after their commit (bound {bound_ms:.0f} ms), "
        f"{len(relay_ms) - len(by_relay)} published before the process died; the relay moved {relayed} rows "
        f"in all; {len(payments)} payments, succeeded charges per payment {sorted(set(charges.values()))}"
    )
    assert kills >= 8
    assert len(payments) == REQUESTS, "one payment per Idempotency-Key, none lost, none doubled"
    assert {answered[f"kill-{i}"]["jobId"] for i in range(REQUESTS)} == set(payments)
    assert {job.state for job in final} == {"completed"}
    assert {p.status for p in payments.values()} == {"succeeded"}
    assert charges == {str(p.id): 1 for p in payments.values()}
    assert by_relay, "some cut requests had committed, not published, and were left to the relay"
    assert max(relay_ms) <= bound_ms
    assert outbox_left is True, f"{outbox_left} outbox rows left"
