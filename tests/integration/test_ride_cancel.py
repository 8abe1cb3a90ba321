"""POST /rides/<id>/cancel against a real worker, localstripe (through the SDK) and SQL.

A ride is cancelled with the payments not charged yet: each PaymentIntent is cancelled
at Stripe, each payment row marked, each job cancelled (a waiting one never runs, a
running one stops before it can charge). A payment that was charged is not touched.
"""

import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from devstack.processes import stop
from rideshare.audit import AuditEntry
from rideshare.auth import issue_token
from rideshare.db import get_db
from rideshare.payments.service import create_payment
from rideshare.rides.models import Ride
from tests.conftest import own_app, start_worker, wait_for_jobs
from tests.integration.test_payments import create_ride, intents_for, payment_row, post_payment

pytestmark = pytest.mark.integration

FINISHED = ("completed", "failed", "cancelled", "expired")


def ride_status(ride_id: int) -> str:
    with get_db().session() as session:
        return session.get(Ride, ride_id).status


def new_payment(ride_id: int, **options) -> tuple[int, str]:
    payment, job = create_payment(
        user_id="42", ride_id=ride_id, amount=Decimal("18.00"), currency="usd", payment_method="pm_card_visa", **options
    )
    return payment.id, job.id


def wait_for_request(proxy, since: int, method: str, suffix: str, timeout: float = 10) -> None:
    """Until the gateway proxy has seen such a request (after its since-th one)."""
    deadline = time.monotonic() + timeout
    while not any(m == method and p.endswith(suffix) for m, p, _ in proxy.requests[since:]):
        assert time.monotonic() < deadline, f"no {method} ...{suffix} reached the gateway"
        time.sleep(0.02)


def test_a_rider_cancels_a_ride_whose_payment_job_is_delayed(app, client, stack, auth_headers):
    headers = auth_headers("42")
    ride_id = create_ride(client, headers)
    payment_id, job_id = new_payment(ride_id, delay=60_000)
    assert stack.job(job_id).state == "delayed"
    # Found by its ride before anything ran.
    found, _ = app.extensions["jobs"].store.search("payment", tags=[f"rideId:{ride_id}", f"paymentId:{payment_id}"])
    assert [found_id for _, found_id in found] == [job_id]

    response = client.post(f"/rides/{ride_id}/cancel", json={"reason": "plans changed"}, headers=headers)

    assert response.status_code == 200, response.json
    assert response.json == {
        "message": "Ride cancelled",
        "rideId": ride_id,
        "status": "cancelled",
        "payments": [{"paymentId": payment_id, "status": "cancelled", "jobId": job_id, "jobState": "cancelled"}],
    }
    job = stack.job(job_id)
    assert (job.state, job.attempts) == ("cancelled", 0)
    assert job.cancel_reason == f"ride {ride_id} cancelled by its rider: plans changed"
    assert ride_status(ride_id) == "cancelled"
    row = payment_row(payment_id)
    assert (row.status, row.failure_reason) == ("cancelled", job.cancel_reason)
    assert intents_for(stack, payment_id) == []
    # Again: the same answer, nothing more; and the cancelled ride takes no new payment.
    again = client.post(f"/rides/{ride_id}/cancel", headers=headers)
    assert again.status_code == 200 and again.json["payments"] == response.json["payments"]
    body = {"amount": "5.00", "paymentMethod": "pm_card_visa", "rideId": ride_id}
    assert client.post("/payments", json=body, headers=headers).status_code == 422


def test_cancel_after_the_payment_succeeded_answers_409_and_changes_nothing(app, client, stack, auth_headers):
    headers = auth_headers("42")
    ride_id = create_ride(client, headers)
    accepted = post_payment(client, headers, ride_id)
    assert stack.wait_for_job(accepted["jobId"]).state == "completed"
    before = payment_row(accepted["paymentId"])

    response = client.post(f"/rides/{ride_id}/cancel", json={}, headers=headers)

    assert response.status_code == 409
    assert response.json["message"] == (
        f"payment {accepted['paymentId']} of ride {ride_id} already succeeded: it was not touched, "
        "and the ride was not cancelled"
    )
    assert ride_status(ride_id) == "requested"
    after = payment_row(accepted["paymentId"])
    assert (after.status, after.updated_at, after.stripe_payment_intent_id) == (
        "succeeded",
        before.updated_at,
        before.stripe_payment_intent_id,
    )
    assert [pi.status for pi in intents_for(stack, accepted["paymentId"])] == ["succeeded"]
    assert stack.job(accepted["jobId"]).state == "completed"


def test_an_intent_created_but_not_confirmed_is_cancelled_at_stripe(app, client, stack, auth_headers):
    headers = auth_headers("42")
    ride_id = create_ride(client, headers)
    # The intent is created and read; the confirm meets a gateway 5xx, so the job waits for its retry.
    stack.services.stripe.inject(None, None, "500")
    payment_id, job_id = new_payment(ride_id, backoff={"type": "fixed", "delay": 60_000})
    assert stack.wait_for_job(job_id, ("delayed",)).attempts == 1
    [intent] = intents_for(stack, payment_id)
    assert intent.status == "requires_confirmation"

    response = client.post(f"/rides/{ride_id}/cancel", headers=headers)

    assert response.status_code == 200, response.json
    assert response.json["payments"][0]["jobState"] == "cancelled"
    assert [(pi.id, pi.status) for pi in intents_for(stack, payment_id)] == [(intent.id, "canceled")]
    assert payment_row(payment_id).status == "cancelled"
    assert stack.job(job_id).state == "cancelled"


@pytest.mark.parametrize(
    ("stalled", "method", "suffix", "faults", "line"),
    [
        # The cancel comes while the intent is being created: the row has no intent to cancel
        # yet, so the delivery that stores it finds the payment cancelled and cancels it.
        ("create", "POST", "/v1/payment_intents", [("sleep", 0.8)], "created as the payment was cancelled"),
        # The cancel comes while the confirm is on its way: the cancel reaches Stripe first,
        # which refuses the confirm, and the delivery stops.
        ("confirm", "POST", "/confirm", [None, None, ("sleep", 0.8)], "was cancelled; nothing was charged"),
        # The same, but the confirm is held past the engine's grace: its pool terminates the
        # delivery, and the confirm that reaches Stripe afterwards charges nothing.
        ("confirm held", "POST", "/confirm", [None, None, ("sleep", 3)], None),
    ],
    ids=["create", "confirm", "confirm-held"],
)
def test_a_running_payment_job_is_stopped_before_it_charges(
    app, client, stack, auth_headers, stalled, method, suffix, faults, line
):
    headers = auth_headers("42")
    ride_id = create_ride(client, headers)
    proxy = stack.services.stripe
    since = len(proxy.requests)
    proxy.inject(*faults)
    payment_id, job_id = new_payment(ride_id)
    wait_for_request(proxy, since, method, suffix)
    assert stack.job(job_id).state == "active"

    asked = time.monotonic()
    response = client.post(f"/rides/{ride_id}/cancel", headers=headers)
    assert response.status_code == 200, response.json
    assert response.json["payments"][0]["jobState"] == "cancelling"
    job = stack.wait_for_job(job_id, FINISHED, timeout=10)

    assert time.monotonic() - asked < 5
    assert (job.state, job.attempts) == ("cancelled", 1)
    store = app.extensions["jobs"].store
    assert len(store.attempts(job_id, "payment")) == 1
    lines = [entry["line"] for entry in store.logs(job_id, "payment")]
    if line is not None:
        assert any(line in logged for logged in lines), lines
    # Once the held request has reached Stripe too, nothing was charged.
    time.sleep(max(0.0, faults[-1][1] + 0.3 - (time.monotonic() - asked)))
    assert [pi.status for pi in intents_for(stack, payment_id)] == ["canceled"]
    assert payment_row(payment_id).status == "cancelled"
    assert ride_status(ride_id) == "cancelled"
    assert stack.job(job_id).state == "cancelled"  # not retried


def test_a_cancelled_job_never_runs_though_every_worker_was_stopped(own_queues_env, stack, tmp_path: Path):
    # Payments queued while no worker runs; one ride is cancelled; then a worker starts.
    with own_app(own_queues_env) as app:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {issue_token('42', 'user', None)}"}
        cancelled_ride, kept_ride = create_ride(client, headers), create_ride(client, headers)
        cancelled = post_payment(client, headers, cancelled_ride)
        kept = post_payment(client, headers, kept_ride)
        response = client.post(f"/rides/{cancelled_ride}/cancel", headers=headers)
        assert response.json["payments"][0]["jobState"] == "cancelled"

        store = app.extensions["jobs"].store
        worker = start_worker(own_queues_env, tmp_path / "worker.log", queues="payment", concurrency=2)
        try:
            # The worker runs the other payment, and never the cancelled one.
            [done] = wait_for_jobs(store, [kept["jobId"]], timeout=30, logs=[tmp_path / "worker.log"])
            assert done.state == "completed"
            time.sleep(0.5)
        finally:
            stop(worker)
        job = store.get(cancelled["jobId"])
        assert (job.state, job.attempts, job.processed_on) == ("cancelled", 0, None)
        assert intents_for(stack, cancelled["paymentId"]) == []
        assert payment_row(cancelled["paymentId"]).status == "cancelled"


def test_only_the_rider_or_an_admin_cancels_a_ride_and_an_admin_is_audited(app, client, stack, auth_headers):
    ride_id = create_ride(client, auth_headers("42"))
    stranger = client.post(f"/rides/{ride_id}/cancel", headers=auth_headers("999"))
    assert stranger.status_code == 404
    driver = client.post(f"/rides/{ride_id}/cancel", headers=auth_headers("d-1"))
    assert driver.status_code == 403
    assert ride_status(ride_id) == "requested"

    admin = client.post(f"/rides/{ride_id}/cancel", json={"reason": "duplicate"}, headers=auth_headers("1", "admin"))

    assert admin.status_code == 200, admin.json
    assert ride_status(ride_id) == "cancelled"
    with get_db().session() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.target == f"ride:{ride_id}")).one()
    assert (entry.actor, entry.action, entry.details) == ("1", "ride.cancel", {"reason": "duplicate", "payments": []})


def test_an_admin_cancelling_a_payment_job_cancels_the_payment_first(app, client, stack, auth_headers):
    """The payment queue's on_cancel hook: the payment row (and any intent at Stripe) is
    cancelled before the job, so no run of it can charge, and nothing is left pending."""
    ride_id = create_ride(client, auth_headers("42"))
    payment_id, job_id = new_payment(ride_id, delay=60_000)

    response = client.post(
        f"/admin/jobs/{job_id}/cancel", json={"reason": "support: duplicate"}, headers=auth_headers(role="admin")
    )

    assert response.status_code == 200, response.json
    assert stack.job(job_id).state == "cancelled"
    assert payment_row(payment_id).status == "cancelled"
    assert intents_for(stack, payment_id) == []
