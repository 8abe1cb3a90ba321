"""RabbitMQ as the broker (BROKER_URL=amqp://...), the job store staying in Redis.

Each run gets a vhost of its own, so its queues meet no other test's workers.
Skipped where no RabbitMQ answers on 127.0.0.1:5672 or rabbitmqctl is missing.
This test runs in both passes; the RabbitMQ pass (TEST_BROKER=rabbitmq, see
scripts/run-tests.sh) runs the whole integration suite over RabbitMQ as well.
"""

import secrets
from decimal import Decimal

import pytest

from devstack.processes import stop
from rideshare.cli import upgrade_database
from rideshare.db import get_db
from rideshare.jobs import add_email_job
from rideshare.payments.service import create_payment
from rideshare.rides.models import Ride
from tests.conftest import fresh_broker, other_db, own_app, start_worker, wait_for_jobs
from tests.support.rabbitmq import list_queues

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]


@pytest.fixture
def rabbit_vhost():
    with fresh_broker(rabbitmq=True) as url:
        yield url


def test_jobs_run_over_rabbitmq_with_a_quorum_payment_queue(stack, rabbit_vhost, tmp_path):
    env = {
        **stack.env,
        "BROKER_URL": rabbit_vhost,
        "REDIS_URL": other_db(stack.env["REDIS_URL"]),
        "JOB_KEY_PREFIX": f"rabbit{secrets.token_hex(3)}",
    }
    with own_app(env, CELERY={"broker_url": rabbit_vhost}) as app:
        store = app.extensions["jobs"].store
        upgrade_database()
        [payment_queue] = [q for q in app.extensions["celery"].conf.task_queues if q.name == "payment"]
        assert payment_queue.queue_arguments == {"x-queue-type": "quorum"}
        log = tmp_path / "worker.log"
        worker = start_worker(env, log)
        try:
            with get_db().session() as session:
                ride = Ride(rider_id="42", driver_id="d", pickup="A", dropoff="B")
                session.add(ride)
            # A priority is accepted on both queue types (RabbitMQ ignores it: see README).
            _, charge = create_payment(
                user_id="42",
                ride_id=ride.id,
                amount=Decimal("9.00"),
                currency="USD",
                payment_method="pm_card_visa",
                priority=1,
            )
            now = add_email_job(
                {"to": f"{env['JOB_KEY_PREFIX']}-a@example.com", "subject": "s", "text": "t"}, priority=1
            )
            later = add_email_job(
                {"to": f"{env['JOB_KEY_PREFIX']}-b@example.com", "subject": "s", "text": "t"}, delay=1500
            )
            retried_data = {"to": f"{env['JOB_KEY_PREFIX']}-c@example.com", "subject": "s", "text": "t"}
            stack.services.smtp.handler.plan(retried_data["to"], "451 later")
            retried = add_email_job(retried_data, backoff={"type": "fixed", "delay": 300})
            ids = [charge.id, now.id, later.id, retried.id]
            final = {j.id: j for j in wait_for_jobs(store, ids, ("completed",), timeout=60, logs=[log])}
        finally:
            stop(worker)
    listed = list_queues(rabbit_vhost, "name", "type")
    assert "payment\tquorum" in listed, listed
    assert final[later.id].processed_on - final[later.id].created_at >= 1500
    assert final[retried.id].attempts == 2
    assert final[charge.id].result["status"] == "succeeded"
