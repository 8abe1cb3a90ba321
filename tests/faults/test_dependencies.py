"""Outages of what the workers depend on: PostgreSQL, the payment gateway, the SMTP server."""

import secrets
import time
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import pytest

from devstack.processes import free_port
from rideshare.cli import upgrade_database
from rideshare.db import get_db
from rideshare.jobs import add_analytics_job, add_email_job
from rideshare.payments.models import Payment
from rideshare.payments.service import create_payment
from rideshare.rides.models import Ride
from tests.conftest import app_from_env, postgres_database
from tests.support.tcp_proxy import TCPProxy

pytestmark = pytest.mark.faults


@pytest.fixture
def postgres_behind_a_proxy(rig):
    """A database of our own on the configured PostgreSQL, reached through a path the test can cut."""
    for url in postgres_database():
        direct = urlsplit(url)
        proxy = TCPProxy(free_port(), (direct.hostname, direct.port or 5432))
        with proxy:
            user = f"{direct.username}@" if direct.username else ""
            yield proxy, urlunsplit(direct._replace(netloc=f"{user}127.0.0.1:{proxy.port}", query="connect_timeout=2"))


def test_database_outage_during_tasks_retries_then_completes(rig, postgres_behind_a_proxy):
    proxy, url = postgres_behind_a_proxy
    env = {**rig.env, "DATABASE_URL": url}
    app = app_from_env(env)
    with app.app_context():
        upgrade_database()
        rig.worker("analytics", concurrency=2, DATABASE_URL=url)
        proxy.cut()  # PostgreSQL unreachable from now on
        jobs = [
            add_analytics_job(
                {
                    "event": "ride_completed",
                    "eventId": f"evt-{secrets.token_hex(6)}",
                    "driverId": "d-1",
                    "data": {"fare": "10.00", "distance": 2.0, "duration": 300},
                },
                attempts=20,
                backoff={"type": "fixed", "delay": 500},
            )
            for _ in range(10)
        ]
        time.sleep(3)
        assert {app.extensions["jobs"].store.get(j.id).state for j in jobs} <= {"delayed", "active", "waiting"}
        proxy.restore()
        final = [app.extensions["jobs"].store.get(j.id) for j in jobs]
        deadline = time.monotonic() + 60
        while any(j.state != "completed" for j in final) and time.monotonic() < deadline:
            time.sleep(0.2)
            final = [app.extensions["jobs"].store.get(j.id) for j in jobs]
        attempts = [j.attempts for j in final]
        errors = app.extensions["jobs"].store.attempts(jobs[0].id)[0]["error"]
    app.extensions["db"].engine.dispose()
    print(f"\nfault: database cut for 3 s under 10 analytics jobs: attempts={attempts}")
    assert {j.state for j in final} == {"completed"}
    assert min(attempts) >= 2, "each job met the outage and was retried"
    assert errors.startswith("OperationalError")


def test_slow_then_down_gateway_retries_and_finally_alerts(rig):
    with rig.app.app_context():
        with get_db().session() as session:
            ride = Ride(rider_id="42", driver_id="d-1", pickup="A", dropoff="B")
            session.add(ride)
        rig.worker("payment", concurrency=2, STRIPE_TIMEOUT="1")
        # Slower than STRIPE_TIMEOUT once: a client-side timeout, retried; then it answers.
        rig.services.stripe.inject(("sleep", 2.5))
        slow, slow_job = create_payment(
            user_id="42",
            ride_id=ride.id,
            amount=Decimal("7.00"),
            currency="USD",
            payment_method="pm_card_visa",
            backoff={"type": "fixed", "delay": 300},
        )
        [done] = rig.wait_all([slow_job.id], timeout=30)
        # Down for good: every attempt fails, then the payment fails and the alert goes out.
        rig.services.stripe.inject(*["500"] * 10)
        down, down_job = create_payment(
            user_id="42",
            ride_id=ride.id,
            amount=Decimal("8.00"),
            currency="USD",
            payment_method="pm_card_visa",
            attempts=3,
            backoff={"type": "exponential", "delay": 200},
        )
        [gave_up] = rig.wait_all([down_job.id], timeout=30)
        with get_db().session() as session:
            rows = {p.id: (p.status, p.failure_reason) for p in session.query(Payment).all()}
    rig.services.stripe.faults.clear()
    assert (done.state, done.attempts) == ("completed", 2)
    assert rig.store.attempts(slow_job.id)[0]["error"].startswith("APIConnectionError")
    assert rows[slow.id][0] == "succeeded"
    assert (gave_up.state, gave_up.attempts) == ("failed", 3)
    assert rows[down.id][0] == "failed"
    alerts = [a for a in rig.services.alerts.received if a.get("job_id") == down_job.id]
    assert alerts and alerts[0]["alert"] == "payment failed"


def test_smtp_4xx_then_acceptance_retries_and_5xx_fails_at_once(rig):
    prefix = rig.env["JOB_KEY_PREFIX"]
    with rig.app.app_context():
        rig.worker("email", concurrency=2)
        later = {"to": f"busy-{prefix}@example.com", "subject": "s", "text": "t"}
        rig.services.smtp.handler.plan(later["to"], "450 4.7.0 try later", "451 4.3.0 busy")
        never = {"to": f"gone-{prefix}@example.com", "subject": "s", "text": "t"}
        rig.services.smtp.handler.plan(never["to"], "550 5.1.1 no such user")
        jobs = [add_email_job(d, backoff={"type": "fixed", "delay": 200}) for d in (later, never)]
        retried, refused = rig.wait_all([j.id for j in jobs], timeout=30)
    assert (retried.state, retried.attempts) == ("completed", 3)
    assert (refused.state, refused.attempts) == ("failed", 1)
    assert len(rig.services.smtp.handler.messages_to(later["to"])) == 1
