"""Requests under stress: the same Idempotency-Key in parallel, oversized bodies and job data."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from rideshare.auth import issue_token
from rideshare.db import get_db
from rideshare.jobs import InvalidJobData, add_email_job
from rideshare.payments.models import IdempotencyKey, Payment

pytestmark = pytest.mark.faults


def test_the_same_idempotency_key_twenty_times_in_parallel_makes_one_job(rig):
    client = rig.app.test_client()
    with rig.app.app_context():
        token = issue_token("42")
    auth = {"Authorization": f"Bearer {token}"}
    ride = client.post("/rides", json={"riderId": "42", "driverId": "d", "pickup": "A", "dropoff": "B"}, headers=auth)
    body = {"amount": "12.50", "paymentMethod": "pm_card_visa", "rideId": ride.json["id"]}
    headers = {**auth, "Idempotency-Key": "order-7-payment"}

    def post(_: int):
        response = rig.app.test_client().post("/payments", json=body, headers=headers)
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(post, range(20)))
    statuses = [status for status, _ in results]
    job_ids = {payload["jobId"] for status, payload in results if status == 202}
    print(f"\nfault: 20 parallel requests, one Idempotency-Key: statuses={sorted(set(statuses))} jobs={len(job_ids)}")
    assert statuses == [202] * 20
    assert len(job_ids) == 1
    with rig.app.app_context(), get_db().session() as session:
        assert session.query(Payment).count() == 1
        assert session.query(IdempotencyKey).count() == 1
    assert sum(rig.store.counts("payment").values()) == 1

    changed = client.post("/payments", json={**body, "amount": "99.00"}, headers=headers)
    assert changed.status_code == 422
    assert "Idempotency-Key" in changed.json["errors"]["headers"]


def test_a_10_mb_body_gets_413_and_oversized_job_data_is_refused(rig):
    client = rig.app.test_client()
    response = client.post(
        "/send-welcome-email", data=b"{" + b" " * (10 * 1024 * 1024) + b"}", content_type="application/json"
    )
    assert response.status_code == 413
    assert response.is_json
    with rig.app.app_context(), pytest.raises(InvalidJobData) as caught:
        add_email_job({"to": "big@example.com", "subject": "s", "text": "x" * 40_000})
    assert "32768" in str(caught.value.errors)
    assert sum(rig.store.counts("email").values()) == 0
