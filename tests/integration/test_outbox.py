"""The transactional outbox (jobqueue/outbox.py): stage in the app's transaction, publish after commit, relay.

The engine-level tests use a table of their own and queues no worker consumes
(own_queues_env), so the stack's worker and its relay never see their rows. The
last tests go through the real stack: its worker's relay and POST /payments.
"""

import json
import secrets
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import stripe
from flask import Flask
from sqlalchemy import MetaData, select

from jobqueue import InvalidJobData, InvalidJobOptions, QueueUnavailable
from jobqueue.outbox import Outbox, outbox_table
from jobqueue.store import now_ms
from jobqueue.worker import RELAY_INTERVAL_S
from rideshare.db import get_db
from rideshare.jobs.outbox import JOB_OUTBOX
from rideshare.payments.models import Payment
from rideshare.payments.service import _store_payment
from tests.conftest import Stack, own_app

pytestmark = pytest.mark.integration

EMAIL = {"to": "outbox@example.com", "subject": "s", "text": "t"}


@pytest.fixture
def engine_app(own_queues_env: dict[str, str]) -> Iterator[Flask]:
    with own_app(own_queues_env) as app:
        yield app


@pytest.fixture
def outbox(engine_app: Flask) -> Iterator[Outbox]:
    """An outbox on a table of this test's own, settling after 300 ms."""
    table = outbox_table(MetaData(), name=f"test_outbox_{secrets.token_hex(4)}")
    engine = engine_app.extensions["db"].engine
    table.create(engine)
    try:
        yield Outbox(table, lambda: engine, engine_app.extensions["jobs"].queues, settle_ms=300)
    finally:
        table.drop(engine)


def stage_emails(outbox: Outbox, count: int, **options) -> list[str]:
    """Stage count email jobs in one committed transaction, as a request that died before publishing."""
    ids = [f"outbox-{secrets.token_hex(6)}" for _ in range(count)]
    with outbox.engine().begin() as conn:
        for job_id in ids:
            outbox.stage(conn, "email", {**EMAIL, "to": f"{job_id}@example.com"}, job_id=job_id, **options)
    return ids


def test_a_staged_job_whose_publish_never_happened_is_relayed_exactly_once(engine_app, outbox):
    store = engine_app.extensions["jobs"].store
    [job_id] = stage_emails(outbox, 1, attempts=2, priority=0)
    assert store.get(job_id) is None
    assert outbox.relay() == 0, "left to its request while younger than settle_ms"
    time.sleep(0.35)
    assert outbox.relay() == 1
    assert outbox.relay() == 0
    job = store.get(job_id)
    assert (job.state, job.data["to"], job.opts["attempts"]) == ("waiting", f"{job_id}@example.com", 2)
    assert outbox.pending() == 0
    assert store.metrics()["email:added"] == 1


def test_publish_after_commit_adds_the_job_and_drops_its_row(engine_app, outbox):
    with outbox.engine().begin() as conn:
        staged = outbox.stage(conn, "email", EMAIL, job_id="published-1", owner="42")
    job = outbox.publish(staged)
    assert (job.id, job.owner, outbox.pending()) == ("published-1", "42", 0)
    # Late or repeated: the same job.
    assert outbox.publish(staged).id == "published-1"
    assert outbox.publish_left_behind("published-1") is None
    assert engine_app.extensions["jobs"].store.metrics()["email:added"] == 1


def test_a_rolled_back_transaction_leaves_no_job(engine_app, outbox):
    with pytest.raises(RuntimeError), outbox.engine().begin() as conn:
        outbox.stage(conn, "email", EMAIL, job_id="rolled-back")
        raise RuntimeError("the domain write failed")
    time.sleep(0.35)
    assert (outbox.pending(), outbox.relay()) == (0, 0)
    assert engine_app.extensions["jobs"].store.get("rolled-back") is None


def test_stage_checks_data_options_and_id_as_add_does(outbox):
    with outbox.engine().begin() as conn:
        with pytest.raises(InvalidJobData):
            outbox.stage(conn, "email", {"to": "x@example.com"}, job_id="bad-data")
        with pytest.raises(InvalidJobOptions):
            outbox.stage(conn, "email", EMAIL, job_id="bad-options", attempts=0)
        with pytest.raises(ValueError, match="job_id"):
            outbox.stage(conn, "email", EMAIL, job_id="x" * 65)
    assert outbox.pending() == 0


def test_sensitive_fields_are_sealed_in_the_outbox_row(engine_app, outbox):
    data = {"paymentId": 7, "paymentMethod": "pm_card_visa"}
    with outbox.engine().begin() as conn:
        outbox.stage(conn, "payment", data, job_id="sealed-1")
        row = conn.execute(select(outbox.table.c.data)).scalar_one()
    assert "pm_card_visa" not in row
    assert set(json.loads(row)["paymentMethod"]) == {"$sealed"}
    time.sleep(0.35)
    assert outbox.relay() == 1
    assert engine_app.extensions["jobs"].store.get("sealed-1").data == data


def test_two_relays_at_once_make_one_job_per_row(engine_app, outbox):
    ids = stage_emails(outbox, 300)
    time.sleep(0.35)
    start = threading.Barrier(2)
    moved: list[int] = []

    outbox.batch_size = 20  # many small claims, so the two relays interleave

    def relay() -> None:
        start.wait()
        mine = 0
        while count := outbox.relay():
            mine += count
        moved.append(mine)

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    print(f"\noutbox: two relays at once moved {moved} of 300 rows")
    assert sum(moved) == 300
    store = engine_app.extensions["jobs"].store
    assert all(job is not None for job in store.get_many(ids))
    assert store.metrics()["email:added"] == 300
    assert outbox.pending() == 0


def test_a_relay_that_fails_half_way_gives_back_only_what_it_did_not_add(engine_app, outbox, monkeypatch):
    ids = stage_emails(outbox, 10)
    time.sleep(0.35)
    queue = engine_app.extensions["jobs"].queues["email"]
    real_add, calls = queue.add_prepared, []

    def failing_add(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise QueueUnavailable("job store unreachable")
        return real_add(*args, **kwargs)

    monkeypatch.setattr(queue, "add_prepared", failing_add)
    assert outbox.relay() == 0  # the error is logged; the next tick tries again
    assert outbox.pending() == 7
    monkeypatch.setattr(queue, "add_prepared", real_add)
    assert outbox.relay() == 7
    store = engine_app.extensions["jobs"].store
    assert all(job is not None for job in store.get_many(ids))
    assert store.metrics()["email:added"] == 10


def test_a_relay_bounds_its_batch(engine_app, outbox):
    stage_emails(outbox, 12)
    time.sleep(0.35)
    outbox.batch_size = 5
    assert [outbox.relay(), outbox.relay(), outbox.relay(), outbox.relay()] == [5, 5, 2, 0]


# --- through the stack: the worker's relay and POST /payments ---------------------


def store_payment_without_publishing(ride_id: int):
    """What a create_payment that died between its commit and its publish leaves behind."""
    return _store_payment("42", ride_id, Decimal("5.00"), "USD", "pm_card_visa", None, True, None, {})


def create_ride(client, headers) -> int:
    ride = client.post(
        "/rides", json={"riderId": "42", "driverId": "d-1", "pickup": "A", "dropoff": "B"}, headers=headers
    )
    return ride.json["id"]


def succeeded_intents(stack: Stack, payment_id: int) -> int:
    client = stripe.StripeClient("sk_test_inspect", base_addresses={"api": stack.services.localstripe_url})
    return sum(
        1
        for intent in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        if intent.status == "succeeded" and intent.metadata.to_dict().get("payment_id") == str(payment_id)
    )


def test_the_workers_relay_queues_a_payment_left_behind_within_its_bound(app, client, stack, auth_headers):
    payment, staged = store_payment_without_publishing(create_ride(client, auth_headers("42")))
    staged_at = now_ms()
    job = stack.wait_for_job(staged.job_id, timeout=20)
    bound_ms = app.config["JOB_OUTBOX_SETTLE_MS"] + RELAY_INTERVAL_S * 1000 + 1000
    print(f"\noutbox: relayed {job.created_at - staged_at} ms after the commit (bound {bound_ms:.0f} ms)")
    assert job.state == "completed", job.failed_reason
    assert job.created_at - staged_at <= bound_ms
    with get_db().session() as session:
        assert session.get(Payment, payment.id).status == "succeeded"
        assert session.scalar(select(JOB_OUTBOX.c.job_id).where(JOB_OUTBOX.c.job_id == staged.job_id)) is None
    assert succeeded_intents(stack, payment.id) == 1


class ProcessDied(BaseException):
    """Stands for the API process ending between its commit and its publish."""


def test_a_replay_of_a_request_that_died_gets_its_job_at_once(app, client, stack, auth_headers, monkeypatch):
    headers = auth_headers("42")
    body = {"amount": "5.00", "paymentMethod": "pm_card_visa", "rideId": create_ride(client, headers)}
    headers = {**headers, "Idempotency-Key": f"died-{secrets.token_hex(4)}"}

    def die(staged):
        raise ProcessDied(staged.job_id)

    monkeypatch.setattr("rideshare.jobs.publish_job", die)
    with pytest.raises(ProcessDied) as died:
        client.post("/payments", json=body, headers=headers)
    monkeypatch.undo()
    job_id = str(died.value)
    with get_db().session() as session:
        payment = session.scalar(select(Payment).where(Payment.job_id == job_id))
    assert payment is not None and stack.job(job_id) is None

    replayed = client.post("/payments", json=body, headers=headers)
    assert replayed.status_code == 202, replayed.json
    assert (replayed.json["jobId"], replayed.json["paymentId"]) == (job_id, payment.id)
    # Published by the replay itself, before any relay would take it.
    assert stack.job(job_id) is not None
    job = stack.wait_for_job(job_id)
    assert job.state == "completed", job.failed_reason
    again = client.post("/payments", json=body, headers=headers)
    assert (again.status_code, again.json["jobId"]) == (202, job_id)
    assert succeeded_intents(stack, payment.id) == 1
