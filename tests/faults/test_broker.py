"""The Redis that is both broker and job store dies and comes back (AOF on)."""

import threading
import time

import pytest

from rideshare.auth import issue_token
from rideshare.jobs import QueueUnavailable, add_email_job

pytestmark = pytest.mark.faults


def mail(tag: str, i: int, prefix: str) -> dict:
    return {"to": f"{tag}-{i}-{prefix}@example.com", "subject": "s", "text": "t"}


def test_redis_restart_mid_stream_keeps_every_accepted_job(rig):
    prefix = rig.env["JOB_KEY_PREFIX"]
    with rig.app.app_context():
        rig.worker("email", concurrency=4)
        accepted, refused = [], []

        def produce() -> None:
            with rig.app.app_context():
                for i in range(300):
                    try:
                        accepted.append(add_email_job(mail("aof", i, prefix), timeout=3000))
                    except QueueUnavailable:
                        refused.append(i)
                    time.sleep(0.01)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(1.0)
        rig.kill_redis()
        time.sleep(1.0)
        rig.start_redis()
        producer.join(60)
        final = rig.wait_all([j.id for j in accepted], timeout=120)
    received = [len(rig.services.smtp.handler.messages_to(j.data["to"])) for j in accepted]
    print(
        f"\nfault: redis SIGKILLed mid-stream: accepted={len(accepted)} refused={len(refused)}"
        f" completed={sum(j.state == 'completed' for j in final)} sent-once={received.count(1)}"
    )
    assert refused, "some adds must have met the dead Redis"
    assert {j.state for j in final} == {"completed"}
    assert received == [1] * len(accepted)


def test_requests_while_redis_is_down_get_503_and_leave_nothing(rig):
    client = rig.app.test_client()
    with rig.app.app_context():
        headers = {"Authorization": f"Bearer {issue_token('42')}"}
    ride = client.post(
        "/rides", json={"riderId": "42", "driverId": "d", "pickup": "A", "dropoff": "B"}, headers=headers
    )
    assert ride.status_code == 201
    rig.kill_redis()
    payment = client.post(
        "/payments",
        json={"amount": "5.00", "paymentMethod": "pm_card_visa", "rideId": ride.json["id"]},
        headers=headers,
    )
    complete = client.post(
        f"/rides/{ride.json['id']}/complete",
        json={"driverId": "d", "fare": 5, "distance": 1.0, "duration": 60},
        headers=headers,
    )
    assert (payment.status_code, complete.status_code) == (503, 503)
    assert payment.headers["Retry-After"]
    with rig.app.app_context():
        from rideshare.db import get_db
        from rideshare.payments.models import Payment
        from rideshare.rides.models import Ride

        with get_db().session() as session:
            assert session.query(Payment).count() == 0
            assert session.get(Ride, ride.json["id"]).status == "requested"
    rig.start_redis()
    rig.worker("payment,analytics", concurrency=2)
    payment = client.post(
        "/payments",
        json={"amount": "5.00", "paymentMethod": "pm_card_visa", "rideId": ride.json["id"]},
        headers=headers,
    )
    assert payment.status_code == 202
    [job] = rig.wait_all([payment.json["jobId"]], timeout=30)
    assert job.state == "completed"


def test_broker_killed_while_workers_hold_delayed_and_running_jobs(rig):
    prefix = rig.env["JOB_KEY_PREFIX"]
    with rig.app.app_context():
        rig.worker("email", concurrency=4)
        running, delayed = [], []
        for i in range(8):
            data = mail("run", i, prefix)
            rig.services.smtp.handler.plan(data["to"], ("stall", 1.5))
            running.append(add_email_job(data, timeout=5000))
        delayed = [add_email_job(mail("later", i, prefix), delay=2500, timeout=5000) for i in range(20)]
        time.sleep(0.7)  # the first running jobs are mid-SMTP now
        assert rig.store.counts("email")["active"] >= 1
        rig.kill_redis()
        time.sleep(2.0)
        rig.start_redis()
        jobs = running + delayed
        final = rig.wait_all([j.id for j in jobs], timeout=120)
    received = [len(rig.services.smtp.handler.messages_to(j.data["to"])) for j in jobs]
    print(
        f"\nfault: redis SIGKILLed with {len(running)} running and {len(delayed)} delayed jobs:"
        f" completed={sum(j.state == 'completed' for j in final)} sent-once={received.count(1)}"
        f" workers alive={sum(w.poll() is None for w in rig.workers)}"
    )
    assert {j.state for j in final} == {"completed"}
    assert received == [1] * len(jobs)
