"""The ride settlement flow and refunds against real workers, localstripe (through the official
SDK), the SMTP sink and SQL: the flow end to end, the settle step failing for good after the
charge (the compensation refunds once), the refund's worker SIGKILLed while Stripe makes the
refund, and an admin's refund."""

import secrets
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import stripe
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from devstack.processes import free_port, stop
from rideshare.analytics.models import AnalyticsEvent
from rideshare.audit import AuditEntry
from rideshare.auth import issue_token
from rideshare.db import get_db
from rideshare.payments.models import Payment
from rideshare.rides import settlement
from rideshare.rides.models import Ride
from tests.conftest import eventually, own_app, start_worker, wait_for_jobs
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration

RIDER, DRIVER = "42", "d-1"


def bearer(user_id: str, role: str = "user") -> dict[str, str]:
    """Authorization headers (in the current app's context)."""
    return {"Authorization": f"Bearer {issue_token(user_id, role)}"}


def completed_ride(client, headers: dict[str, str], fare: str = "18.40") -> int:
    created = client.post(
        "/rides",
        json={"riderId": RIDER, "driverId": DRIVER, "pickup": "Main St", "dropoff": "Airport"},
        headers=headers,
    )
    assert created.status_code == 201, created.json
    ride_id = created.json["id"]
    done = client.post(
        f"/rides/{ride_id}/complete",
        json={"driverId": DRIVER, "fare": fare, "distance": 5.2, "duration": 900},
        headers=headers,
    )
    assert done.status_code == 200, done.json
    return ride_id


def stripe_at(url: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_inspect", base_addresses={"api": url})


def intents_of(url: str, payment_id: int) -> list:
    """Every PaymentIntent localstripe holds for our payment id."""
    intents = stripe_at(url).v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
    return [pi for pi in intents if pi.metadata.to_dict().get("payment_id") == str(payment_id)]


def refunds_of(url: str, intent_id: str) -> list:
    return list(stripe_at(url).v1.refunds.list(params={"payment_intent": intent_id, "limit": 100}).data)


def payment_row(payment_id: int) -> Payment:
    with get_db().session() as session:
        return session.get(Payment, payment_id, options=[selectinload(Payment.receipt)])


def ride_row(ride_id: int) -> Ride:
    with get_db().session() as session:
        return session.get(Ride, ride_id)


def flow_ids(payment: Payment) -> dict[str, str]:
    charge = payment.job_id
    return {
        "settle": f"settle-{charge}",
        "receipt": f"receipt-{charge}",
        "event": f"ride-paid-{charge}",
        "charge": charge,
        "refund": f"comp-{charge}",
    }


def test_a_ride_settles_through_its_flow(app, client, stack, auth_headers):
    rider = auth_headers(RIDER)
    ride_id = completed_ride(client, rider)
    to = f"rider-{secrets.token_hex(4)}@example.com"
    body = {"paymentMethod": "pm_card_visa", "receiptEmail": to}
    driver = auth_headers(DRIVER)  # the ride's driver may settle it, as they may complete it
    started = client.post(f"/rides/{ride_id}/settle", json=body, headers=driver)
    assert started.status_code == 202, started.json
    payment = payment_row(started.json["paymentId"])
    ids = flow_ids(payment)
    assert started.json["jobId"] == ids["settle"]
    assert started.json["state"] == "waiting-children"

    root = stack.wait_for_job(ids["settle"], timeout=60)
    assert root.state == "completed", root.failed_reason
    store = app.extensions["jobs"].store
    charge, receipt, event = (store.get(ids[k]) for k in ("charge", "receipt", "event"))
    assert {j.state for j in (charge, receipt, event)} == {"completed"}
    # The order the flow promises: the charge, then the receipt and the event, then the settle step.
    assert charge.finished_at <= min(receipt.processed_on, event.processed_on)
    assert max(receipt.finished_at, event.finished_at) <= root.processed_on
    assert root.result["rideId"] == ride_id and root.result["stepsFailed"] == {}

    assert ride_row(ride_id).settled_at is not None
    payment = payment_row(payment.id)
    assert (payment.status, str(payment.amount)) == ("succeeded", "18.40")
    [intent] = intents_of(stack.services.localstripe_url, payment.id)
    assert (intent.status, intent.amount) == ("succeeded", 1840)
    # One receipt: the flow's step; the charge's own staging of it found it stored (same id).
    [mail] = eventually(lambda: stack.services.smtp.handler.messages_to(to))
    assert f"RCPT-{payment.id:08d}" in mail.message["Subject"]
    assert payment.receipt.email_job_id == ids["receipt"]
    with get_db().session() as session:
        [paid] = session.scalars(select(AnalyticsEvent).where(AnalyticsEvent.event_id == ids["event"])).all()
    assert (paid.event, paid.ride_id) == ("ride_paid", ride_id)

    shown = client.get(f"/jobs/{ids['settle']}", headers=driver)
    assert shown.status_code == 200
    assert shown.json["children"] == [  # by queue, then id
        {"id": ids["event"], "queue": "analytics", "state": "completed", "policy": "ignore"},
        {"id": ids["receipt"], "queue": "email", "state": "completed", "policy": "ignore"},
    ]
    assert client.get(f"/jobs/{ids['charge']}", headers=rider).json["children"] == []

    again = client.post(f"/rides/{ride_id}/settle", json=body, headers=rider)
    assert (again.status_code, again.json["jobId"], again.json["paymentId"]) == (202, ids["settle"], payment.id)
    assert len(intents_of(stack.services.localstripe_url, payment.id)) == 1

    # The dashboard draws the tree from any of its jobs: the charge under both of its parents.
    token = auth_headers("1", "admin")["Authorization"].removeprefix("Bearer ")
    assert client.post("/admin/login", data={"token": token}).status_code == 302
    page = client.get(f"/admin/ui/jobs/{ids['charge']}").get_data(as_text=True)
    tree = page[page.index('id="flow-tree"') : page.index('<div class="cols">')]
    for key in ("settle", "receipt", "event", "charge"):
        assert f'data-job="{ids[key]}" data-state="completed"' in tree, key
    assert f'<a href="/admin/ui/jobs/{ids["settle"]}">' in tree
    assert tree.count(f'data-job="{ids["charge"]}"') == 2 and "(shared: drawn above)" in tree


def test_settle_refuses_a_ride_not_completed_or_not_yours(app, client, stack, auth_headers):
    rider = auth_headers(RIDER)
    created = client.post(
        "/rides", json={"riderId": RIDER, "driverId": DRIVER, "pickup": "A", "dropoff": "B"}, headers=rider
    )
    ride_id = created.json["id"]
    body = {"paymentMethod": "pm_card_visa"}
    assert client.post(f"/rides/{ride_id}/settle", json=body, headers=rider).status_code == 409
    assert client.post(f"/rides/{ride_id}/settle", json=body, headers=auth_headers("7")).status_code == 404
    assert client.post(f"/rides/{ride_id}/settle", json={**body, "amount": 1}, headers=rider).status_code == 422


@pytest.fixture
def flow_env(stack, own_queues_env: dict[str, str]) -> Iterator[tuple[dict[str, str], FaultProxy]]:
    """own_queues_env with Stripe behind a fault proxy of the test's own (it counts and can hold requests)."""
    with FaultProxy(free_port(), stack.services.localstripe_url) as proxy:
        yield {**own_queues_env, "JOB_KEY_PREFIX": f"settle{secrets.token_hex(3)}", "STRIPE_API_BASE": proxy.url}, proxy


def start_settlement(app: Flask, client, to: str, **job_options) -> tuple[int, Payment, dict[str, str]]:
    """A completed ride of rider 42 and its settlement flow (settle, with job_options)."""
    headers = bearer(RIDER)
    ride_id = completed_ride(client, headers)
    started = settlement.settle(
        ride_id, user_id=RIDER, is_admin=False, payment_method="pm_card_visa", receipt_email=to, **job_options
    )
    payment = payment_row(started.payment_id)
    return ride_id, payment, flow_ids(payment)


def dispute(ride_id: int) -> None:
    """Take the ride out of completed, as a dispute would: its settle step is refused from now on."""
    with get_db().session() as session:
        session.execute(update(Ride).where(Ride.id == ride_id).values(status="disputed"))


def test_a_settle_step_that_fails_for_good_refunds_the_charge_once(stack, flow_env, tmp_path):
    env, proxy = flow_env
    localstripe = stack.services.localstripe_url
    to = f"rider-{secrets.token_hex(4)}@example.com"
    workers = []
    with own_app(env) as app:
        client = app.test_client()
        store = app.extensions["jobs"].store
        try:
            # Payments and email first: the charge and the receipt run, the settle step cannot yet.
            workers.append(start_worker(env, tmp_path / "pay.log", queues="payment,email", concurrency=2))
            ride_id, payment, ids = start_settlement(app, client, to)
            wait_for_jobs(store, [ids["charge"], ids["receipt"]], ("completed",), 30, [tmp_path / "pay.log"])
            dispute(ride_id)
            workers.append(start_worker(env, tmp_path / "sql.log", queues="analytics", concurrency=2))
            logs = [tmp_path / "pay.log", tmp_path / "sql.log"]
            [root] = wait_for_jobs(store, [ids["settle"]], ("completed", "failed"), 30, logs)
            [refund] = wait_for_jobs(store, [ids["refund"]], ("completed", "failed"), 30, logs)
            refund_mail = eventually(lambda: stack.services.smtp.handler.messages_to(to)[1:], timeout=15)
            time.sleep(1.0)  # a second refund or email would come now
            payment = payment_row(payment.id)
            mails = stack.services.smtp.handler.messages_to(to)
            children = store.children(ids["settle"], "analytics")
        finally:
            for worker in workers:
                stop(worker)
    [intent] = intents_of(localstripe, payment.id)
    refunds = refunds_of(localstripe, intent.id)
    posts = [r for r in proxy.requests if r[0] == "POST" and r[1].startswith("/v1/refunds")]
    charges = sum(1 for pi in intents_of(localstripe, payment.id) if pi.status == "succeeded")
    print(
        f"\nsettlement: settle {root.state} ({root.failed_reason});"
        f" charges={charges} refunds={len(refunds)} mails={len(mails)}"
    )
    assert root.state == "failed" and f"ride {ride_id} is disputed" in root.failed_reason
    assert [c["state"] for c in children] == ["completed", "completed"], "the steps before it completed"
    assert refund.state == "completed", refund.failed_reason
    assert intent.status == "succeeded"
    assert len(refunds) == 1 and len(posts) == 1, "exactly one refund for exactly one charge"
    assert (refunds[0].amount, refunds[0].status) == (1840, "succeeded")
    assert (payment.status, payment.stripe_refund_id, payment.refund_job_id) == ("refunded", refunds[0].id, refund.id)
    assert refund_mail and len(mails) == 2, "the receipt, then one refund receipt"
    assert "Your receipt" in mails[0].message["Subject"] and "Your refund" in mails[1].message["Subject"]
    assert payment.refund_email_job_id == f"refund-receipt-{payment.job_id}"


def test_the_refund_worker_sigkilled_mid_refund_still_refunds_once(stack, flow_env, tmp_path):
    """The refund's POST is held at the proxy, its worker SIGKILLed while it waits, then the POST
    goes on to localstripe, which makes the refund the dead worker never learned of. The rerun
    (after the job's lease) asks Stripe first, finds it and records it: one refund."""
    env, proxy = flow_env
    localstripe = stack.services.localstripe_url
    to = f"rider-{secrets.token_hex(4)}@example.com"
    held, release = threading.Event(), threading.Event()

    def hold_refunds(method: str, path: str) -> None:
        if method == "POST" and path.startswith("/v1/refunds") and not held.is_set():
            held.set()
            release.wait(30)
        return None  # then forwarded to localstripe

    remove = proxy.answer(hold_refunds)
    workers: dict[str, object] = {}
    with own_app(env) as app:
        client = app.test_client()
        store = app.extensions["jobs"].store
        logs = [tmp_path / n for n in ("pay1.log", "sql.log", "pay2.log")]
        try:
            # One process (a threads pool), so one SIGKILL ends every thread of it.
            workers["pay1"] = start_worker(env, logs[0], queues="payment", concurrency=2, pool="threads")
            workers["sql"] = start_worker(env, logs[1], queues="email,analytics", concurrency=2)
            # A 3 s timeout: the refund's lease (timeout + 7 s) runs out 10 s after its worker died.
            ride_id, payment, ids = start_settlement(app, client, to, timeout=3000)
            dispute(ride_id)  # before any step ran: the charge goes on, the settle step will be refused
            assert held.wait(30), "the refund never reached the gateway"
            killed = workers.pop("pay1")
            killed.send_signal(signal.SIGKILL)
            killed.wait(10)
            active = store.get(ids["refund"])
            release.set()
            intent_id = payment_row(payment.id).stripe_payment_intent_id
            made = eventually(lambda: refunds_of(localstripe, intent_id), timeout=10)
            assert len(made) == 1, "the held POST reached localstripe after its worker died"
            assert payment_row(payment.id).status == "succeeded", "the dead worker recorded nothing"
            workers["pay2"] = start_worker(env, logs[2], queues="payment", concurrency=2, pool="threads")
            [refund] = wait_for_jobs(store, [ids["refund"]], ("completed", "failed"), 40, logs)
            eventually(lambda: stack.services.smtp.handler.messages_to(to)[1:], timeout=15)
            time.sleep(1.0)
            row = payment_row(payment.id)
            mails = stack.services.smtp.handler.messages_to(to)
            rerun_log = logs[2].read_text()
        finally:
            remove()
            release.set()
            for worker in workers.values():
                stop(worker)
    refunds = refunds_of(localstripe, intent_id)
    posts = [r for r in proxy.requests if r[0] == "POST" and r[1].startswith("/v1/refunds")]
    print(
        f"\nsettlement: refund worker SIGKILLed mid-refund (job {active.state}, attempt {active.attempts});"
        f" rerun attempts={refund.attempts} refunds={len(refunds)} refund POSTs={len(posts)} mails={len(mails)}"
    )
    assert active.state == "active", "the kill landed while the refund ran"
    assert refund.state == "completed", refund.failed_reason
    assert refund.attempts == 2 or refund.stalls >= 1, "the refund ran again after its worker died"
    assert len(refunds) == 1 and len(posts) == 1, "exactly one refund, however often it ran"
    assert (row.status, row.stripe_refund_id) == ("refunded", refunds[0].id)
    assert len(intents_of(localstripe, payment.id)) == 1
    assert len(mails) == 2, "the receipt and one refund receipt"
    assert "found at the gateway" in rerun_log or refund.attempts == 2


def test_an_admin_refunds_a_payment_once(app, client, stack, auth_headers):
    rider = auth_headers(RIDER)
    ride_id = completed_ride(client, rider)
    to = f"rider-{secrets.token_hex(4)}@example.com"
    paid = client.post(
        "/payments",
        json={"amount": "9.99", "paymentMethod": "pm_card_visa", "rideId": ride_id, "receiptEmail": to},
        headers=rider,
    )
    assert paid.status_code == 202
    payment_id = paid.json["paymentId"]
    admin = auth_headers("7", "admin")

    assert client.post(f"/admin/payments/{payment_id}/refund", headers=rider).status_code == 403
    # Not charged yet (no worker has charged it, or it is being charged): nothing to refund.
    declined = client.post(
        "/payments",
        json={"amount": "5.00", "paymentMethod": "pm_card_chargeCustomerFail", "rideId": ride_id},
        headers=rider,
    ).json
    assert stack.wait_for_job(declined["jobId"]).state == "failed"
    refused = client.post(f"/admin/payments/{declined['paymentId']}/refund", headers=admin)
    assert refused.status_code == 409 and "never charged" in refused.json["message"]
    assert client.post("/admin/payments/2147483647/refund", headers=admin).status_code == 404

    assert stack.wait_for_job(paid.json["jobId"]).state == "completed"
    first = client.post(f"/admin/payments/{payment_id}/refund", headers=admin)
    second = client.post(f"/admin/payments/{payment_id}/refund", headers=admin)
    assert first.status_code == second.status_code == 202
    assert first.json["created"] is True and second.json["created"] is False
    assert first.json["jobId"] == second.json["jobId"]
    job = stack.wait_for_job(first.json["jobId"])
    assert job.state == "completed", job.failed_reason
    third = client.post(f"/admin/payments/{payment_id}/refund", headers=admin)
    assert (third.json["jobId"], third.json["state"], third.json["paymentStatus"]) == (
        job.id,
        "completed",
        "refunded",
    )

    row = payment_row(payment_id)
    [intent] = intents_of(stack.services.localstripe_url, payment_id)
    [refund] = refunds_of(stack.services.localstripe_url, intent.id)
    assert (row.status, row.stripe_refund_id, refund.amount) == ("refunded", refund.id, 999)
    mails = eventually(lambda: stack.services.smtp.handler.messages_to(to)[1:], timeout=15)
    assert [m.message["Subject"].split()[1] for m in mails] == ["refund"]
    assert client.get(f"/payments/{payment_id}", headers=rider).json["status"] == "refunded"
    with get_db().session() as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target.in_([f"payment:{payment_id}", f"payment:{declined['paymentId']}"]))
            .order_by(AuditEntry.id)
        ).all()
    assert [(e.actor, e.action, e.details.get("created")) for e in entries] == [
        ("user:7", "payment.refund", None),
        ("user:7", "payment.refund", True),
        ("user:7", "payment.refund", False),
        ("user:7", "payment.refund", False),
    ]
    assert entries[0].details["refused"].startswith(f"payment {declined['paymentId']} is failed")
