"""A job stuck past its hard limit in a threads pool: its lease is handed to another worker
at once, and its own worker recycles itself. No exception is raised into the stuck thread."""

import time

import pytest

from tests.conftest import eventually
from tests.faults.test_worker_loss import queue_payments, succeeded_charges

pytestmark = pytest.mark.faults


def test_a_stuck_payment_is_released_to_another_worker_and_its_worker_recycles(rig):
    store = rig.store
    with rig.app.app_context():
        # The gateway holds the first request for 15 s, and this worker's Stripe client
        # waits up to 30 s: the job is stuck well past its hard limit (1 s + 5 s grace).
        stuck = rig.worker("payment", concurrency=4, pool="threads", STRIPE_TIMEOUT="30")
        rig.services.stripe.faults.append(("sleep", 15))
        [(payment, job)] = queue_payments(1, "14.00")
        assert eventually(lambda: store.get(job.id).state == "active", timeout=20)
        taken_at = time.monotonic()
        rescuer = rig.worker("payment", concurrency=4, pool="threads")
        [done] = rig.wait_all([job.id], timeout=40)
        done_s = time.monotonic() - taken_at
        # Its worker is recycled: a warm shutdown, ended once the stuck call returns.
        stuck.wait(60)
        metrics = store.metrics()
    log = stuck.log.read_text()  # type: ignore[attr-defined]
    charges = succeeded_charges(rig.services.localstripe_url)
    released = metrics.get("payment:released")
    print(f"\nstuck: completed {done_s:.1f} s after the stuck start, by {done.worker}; released={released}")
    # A second delivery ran it: another worker, or a free thread of the same one before it recycled.
    assert (done.state, done.attempts) == ("completed", 2)
    assert done_s < 15, "it did not wait for the stuck call"
    assert metrics.get("payment:released") == 1
    assert '"event": "job.stuck_released"' in log and '"event": "worker.recycling"' in log
    assert stuck.returncode is not None
    assert rescuer.poll() is None
    assert charges == {str(payment.id): 1}
