"""Ride settlement flows against real worker processes and a Redis of the test's own (AOF on):
a child that completes while its parent's worker is dead still releases the parent, a worker
SIGKILLed mid-charge loses nothing and charges once, and a Redis restart keeps every flow
where it was; new workers then finish them all.

The store-level semantics (policies, shared nodes, compensation order) are test_flow_jobs.py's.
"""

import secrets
import signal
import time
from pathlib import Path

import pytest
import redis
import stripe
from sqlalchemy import select

from devstack.processes import free_port, start_redis, stop
from rideshare.db import get_db
from rideshare.payments.models import Payment
from rideshare.rides import settlement
from rideshare.rides.models import Ride
from tests.conftest import eventually, own_app, start_worker, wait_for_jobs
from tests.integration.test_settlement import RIDER, bearer, completed_ride, flow_ids
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration

FLOWS = 3


def succeeded_intents(localstripe_url: str, payment_id: int) -> int:
    client = stripe.StripeClient("sk_test_inspect", base_addresses={"api": localstripe_url})
    intents = client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
    return sum(
        1 for pi in intents if pi.metadata.to_dict().get("payment_id") == str(payment_id) and pi.status == "succeeded"
    )


def states(store, ids: list[str]) -> list[str]:
    return [job.state if job else "missing" for job in store.get_many(ids)]


def test_flows_survive_worker_sigkills_and_a_redis_restart(stack, tmp_path: Path):
    port = free_port()
    redis_dir = tmp_path / "redis"
    server = start_redis(redis_dir, port, appendonly=True)
    assert redis.Redis(port=port).config_get("appendonly")["appendonly"] == "yes"
    proxy = FaultProxy(free_port(), stack.services.localstripe_url).__enter__()
    env = {
        **stack.env,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "BROKER_URL": "",  # the broker is this Redis too: it restarts with the store
        "JOB_KEY_PREFIX": f"durable{secrets.token_hex(3)}",
        "STRIPE_API_BASE": proxy.url,
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    workers: dict[str, object] = {}

    def start(name: str, queues: str) -> None:
        # Threads pools: one process each, so one SIGKILL ends the worker whole.
        workers[name] = start_worker(env, logs / f"{name}.log", queues=queues, concurrency=2, pool="threads")

    def kill(name: str) -> None:
        worker = workers.pop(name)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)

    try:
        with own_app(env) as app:
            client = app.test_client()
            store = app.extensions["jobs"].store
            start("parents1", "email,analytics")
            flows = []
            for _ in range(FLOWS):
                ride_id = completed_ride(client, bearer(RIDER))
                started = settlement.settle(
                    ride_id,
                    user_id=RIDER,
                    is_admin=False,
                    payment_method="pm_card_visa",
                    receipt_email=f"durable-{secrets.token_hex(4)}@example.com",
                    timeout=3000,  # leases of 10 s: a killed worker's job runs again 10 s later
                )
                with get_db().session() as session:
                    payment = session.get(Payment, started.payment_id)
                    flows.append((ride_id, payment.id, payment.receipt_email, flow_ids(payment)))
            ids = {k: [f[3][k] for f in flows] for k in ("settle", "receipt", "event", "charge")}

            # The parents' worker dies; the children's (payments) worker runs, and is SIGKILLed mid-charge.
            kill("parents1")
            proxy.latency = 0.3  # each Stripe call 0.3 s: a charge takes about a second
            start("pay1", "payment")
            eventually(lambda: store.counts("payment")["active"] > 0, timeout=20)
            time.sleep(0.4)
            killed_mid_charge = store.counts("payment")["active"]
            kill("pay1")
            proxy.latency = 0.0
            start("pay2", "payment")
            all_logs = list(logs.glob("*.log"))
            charges = wait_for_jobs(store, ids["charge"], ("completed",), 60, all_logs)
            # Released with no worker of their queues alive: the charge's worker relayed it.
            assert eventually(lambda: set(states(store, ids["receipt"] + ids["event"])) == {"waiting"}, timeout=10)
            assert set(states(store, ids["settle"])) == {"waiting-children"}
            kill("pay2")

            # Redis restarts (SIGTERM: it writes its AOF out, then exits) with every flow mid-way.
            stop(server)
            server = start_redis(redis_dir, port, appendonly=True)
            after = eventually(lambda: _states_after_restart(store, ids), timeout=10)
            assert after == {
                "settle": {"waiting-children"},
                "receipt": {"waiting"},
                "event": {"waiting"},
                "charge": {"completed"},
            }, after

            start("all", "payment,email,analytics")
            roots = wait_for_jobs(store, ids["settle"], ("completed", "failed"), 60, list(logs.glob("*.log")))
            with get_db().session() as session:
                rides = session.scalars(select(Ride).where(Ride.id.in_([f[0] for f in flows]))).all()
                payments = session.scalars(select(Payment).where(Payment.id.in_([f[1] for f in flows]))).all()
            mails = [len(stack.services.smtp.handler.messages_to(f[2])) for f in flows]
    finally:
        for worker in workers.values():
            stop(worker)
        stop(server)
        proxy.__exit__(None, None, None)
    reruns = sum(1 for c in charges if c.attempts > 1 or c.stalls)
    charged = [succeeded_intents(stack.services.localstripe_url, f[1]) for f in flows]
    print(
        f"\ndurable flows: {FLOWS} flows; parents' worker SIGKILLed, children released meanwhile;"
        f" payment worker SIGKILLed with {killed_mid_charge} charges active ({reruns} ran again);"
        f" Redis restarted (AOF); roots {[r.state for r in roots]}; charges per payment {charged}; receipts {mails}"
    )
    assert killed_mid_charge >= 1, "the kill landed while a charge ran"
    assert [r.state for r in roots] == ["completed"] * FLOWS, [r.failed_reason for r in roots]
    assert all(ride.settled_at is not None for ride in rides)
    assert {p.status for p in payments} == {"succeeded"}
    assert charged == [1] * FLOWS, "one charge per payment, kills and restart notwithstanding"
    assert mails == [1] * FLOWS, "one receipt per ride"


def _states_after_restart(store, ids: dict[str, list[str]]) -> dict[str, set[str]] | None:
    try:
        return {kind: set(states(store, job_ids)) for kind, job_ids in ids.items()}
    except redis.ConnectionError:
        return None  # the store's client reconnects on its next call
