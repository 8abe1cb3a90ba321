"""Fencing in the payment and email domains: a late job delivery changes no row.

The domain functions are called directly, in an app context, on real SQL,
localstripe and SMTP, with the tokens two deliveries of one job would carry; no
Celery worker runs. The app's job store is a Redis database no worker consumes.
"""

import dataclasses
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe
from flask import Flask
from sqlalchemy import func, select

from jobqueue import Job, PermanentJobError, StaleDelivery, TransientJobError
from rideshare import create_app
from rideshare.cli import upgrade_database
from rideshare.config import settings_from_env
from rideshare.db import get_db
from rideshare.jobs import add_email_job
from rideshare.mail import service as mail_service
from rideshare.mail.models import EmailDelivery
from rideshare.mail.service import SmtpReplyError, mark_delivery_failed, send_email
from rideshare.payments import gateway
from rideshare.payments.charge import charge_payment, payment_failed_for_good
from rideshare.payments.models import Payment, Receipt
from rideshare.payments.service import create_payment
from rideshare.rides.models import Ride
from tests.conftest import Services, close_app, other_db, stack_env

pytestmark = pytest.mark.integration


@pytest.fixture
def domain_app(database_url: str, redis_url: str, services: Services, tmp_path: Path) -> Iterator[Flask]:
    """An app on the suite's SQL, localstripe and SMTP, with a job store of its own that no worker reads."""
    env = stack_env(database_url, other_db(redis_url), services, tmp_path)
    app = create_app({**settings_from_env(env), "TESTING": True})
    # Payment ids restart with each database: only this test's intents in localstripe.
    urllib.request.urlopen(
        urllib.request.Request(f"{services.localstripe_url}/_config/data", method="DELETE"), timeout=5
    ).close()
    try:
        with app.app_context():
            upgrade_database()
            yield app
    finally:
        mail_service._connection.take((), 0)  # QUIT the SMTP connection this thread kept
        # Drop the published outbox rows now, and let a drop under way end, so no connection
        # is out of the pool when it is disposed (one would be garbage-collected open).
        app.extensions["outbox"].flush()
        time.sleep(0.2)
        close_app(app)


def delivery(job: Job, token: int) -> Job:
    """The job as its delivery with this fencing token sees it."""
    return dataclasses.replace(job, token=str(token))


def new_payment(receipt_email: str | None = None) -> tuple[int, Job]:
    """A pending payment of rider 42 and its (never consumed) charge job."""
    with get_db().session() as session:
        ride = Ride(rider_id="42", driver_id="d-1", pickup="A", dropoff="B")
        session.add(ride)
    payment, job = create_payment(
        user_id="42",
        ride_id=ride.id,
        amount=Decimal("12.00"),
        currency="USD",
        payment_method="pm_card_visa",
        receipt_email=receipt_email or f"rider-{secrets.token_hex(4)}@example.com",
    )
    return payment.id, job


def payment_state(payment_id: int) -> dict[str, Any]:
    """Everything a late delivery could change about a payment, its receipt included."""
    with get_db().session() as session:
        payment = session.get(Payment, payment_id)
        receipts = session.scalars(select(Receipt).where(Receipt.payment_id == payment_id)).all()
        return {
            "status": payment.status,
            "intent": payment.stripe_payment_intent_id,
            "failure": payment.failure_reason,
            "attempts": payment.attempts,
            "owner": payment.owner_token,
            "updated": payment.updated_at,
            "receipts": [(r.number, r.stripe_payment_intent_id, r.email_job_id) for r in receipts],
        }


def intents(services: Services, payment_id: int) -> dict[str, str]:
    """Status per PaymentIntent localstripe holds for the payment."""
    client = stripe.StripeClient("sk_test_inspect", base_addresses={"api": services.localstripe_url})
    listed = client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
    return {pi.id: pi.status for pi in listed if pi.metadata.to_dict().get("payment_id") == str(payment_id)}


def email_jobs(app: Flask) -> int:
    return app.extensions["jobs"].store.counts("email")["waiting"]


def interrupt_once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, meanwhile: Callable[[], Any]) -> list:
    """Make the first call of module.name run meanwhile() just before it (a newer delivery
    taking over while this one is frozen); later calls pass through. Returns meanwhile's result."""
    real = getattr(module, name)
    ran: list = []

    def first_call(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(module, name, real)  # meanwhile's own calls pass through
        ran.append(meanwhile())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, first_call)
    return ran


def test_a_late_delivery_changes_no_payment_row(domain_app, services):
    payment_id, _ = new_payment()
    result = charge_payment(payment_id, token=2)
    assert result["status"] == "succeeded"
    before = payment_state(payment_id)

    with pytest.raises(StaleDelivery):
        charge_payment(payment_id, token=1)

    assert payment_state(payment_id) == before
    assert before["owner"] == 2
    assert before["receipts"][0][2] is not None
    assert intents(services, payment_id) == {before["intent"]: "succeeded"}
    assert email_jobs(domain_app) == 1


def test_a_newer_delivery_of_a_charged_payment_only_answers(domain_app, services):
    payment_id, _ = new_payment()
    charge_payment(payment_id, token=1)
    before = payment_state(payment_id)

    result = charge_payment(payment_id, token=2)

    after = payment_state(payment_id)
    assert result["status"] == "succeeded" and result["paymentIntentId"] == before["intent"]
    assert after["owner"] == 2
    assert {k: v for k, v in after.items() if k not in ("owner", "updated")} == {
        k: v for k, v in before.items() if k not in ("owner", "updated")
    }
    assert intents(services, payment_id) == {before["intent"]: "succeeded"}
    assert email_jobs(domain_app) == 1


def test_a_delivery_frozen_while_creating_its_intent_is_refused_after_a_newer_one_charged(
    domain_app, services, monkeypatch
):
    # Delivery 1 claims the payment, then freezes in the gateway; delivery 2 claims it and
    # charges it. Localstripe ignores idempotency keys, so delivery 1 wakes with an intent
    # of its own, as in the fault test that showed the bug.
    payment_id, _ = new_payment()
    newer = interrupt_once(monkeypatch, gateway, "create_intent", lambda: charge_payment(payment_id, token=2))

    with pytest.raises(StaleDelivery):
        charge_payment(payment_id, token=1)

    [charged] = newer
    state = payment_state(payment_id)
    assert (state["status"], state["intent"], state["owner"]) == ("succeeded", charged["paymentIntentId"], 2)
    assert len(state["receipts"]) == 1
    held = intents(services, payment_id)
    assert held[state["intent"]] == "succeeded"
    # Delivery 1's own intent was never stored, so never confirmed: nothing charged twice.
    assert list(held.values()).count("succeeded") == 1
    assert email_jobs(domain_app) == 1


def test_a_delivery_frozen_before_confirming_is_refused_after_a_newer_one_charged(domain_app, services, monkeypatch):
    # Delivery 1 has stored its intent and freezes before confirming it; delivery 2 confirms
    # that same intent. Delivery 1's confirm charges nothing and its writes are refused.
    payment_id, _ = new_payment()
    newer = interrupt_once(monkeypatch, gateway, "confirm_intent", lambda: charge_payment(payment_id, token=2))

    with pytest.raises(StaleDelivery):
        charge_payment(payment_id, token=1)

    [charged] = newer
    state = payment_state(payment_id)
    assert (state["status"], state["owner"], state["attempts"]) == ("succeeded", 2, 2)
    assert intents(services, payment_id) == {charged["paymentIntentId"]: "succeeded"}
    assert state["intent"] == charged["paymentIntentId"]
    assert len(state["receipts"]) == 1
    assert email_jobs(domain_app) == 1


def test_a_late_decline_does_not_fail_a_payment_a_newer_delivery_owns(domain_app, services, monkeypatch):
    # Delivery 1 waits on its confirm while delivery 2 claims the payment (and stops at a
    # gateway error); then delivery 1's confirm comes back declined. It may not fail the payment.
    payment_id, _ = new_payment()

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise stripe.APIError("503 Service Unavailable")

    def declined_late(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(gateway, "retrieve_intent", unavailable)
        with pytest.raises(stripe.APIError):
            charge_payment(payment_id, token=2)
        raise stripe.CardError("Your card was declined.", None, "card_declined")

    monkeypatch.setattr(gateway, "confirm_intent", declined_late)

    with pytest.raises(StaleDelivery):
        charge_payment(payment_id, token=1)

    state = payment_state(payment_id)
    assert (state["status"], state["failure"], state["owner"]) == ("processing", None, 2)
    assert state["receipts"] == []


def test_a_stale_final_failure_hook_leaves_a_newer_deliverys_payment(domain_app, services):
    payment_id, job = new_payment()
    charge_payment(payment_id, token=2)
    before = payment_state(payment_id)
    alerts = len(services.alerts.received)

    payment_failed_for_good(delivery(job, 1), "timeout: ran past its timeout")

    assert payment_state(payment_id) == before
    assert len(services.alerts.received) == alerts


def test_the_final_failure_hook_fails_a_payment_no_newer_delivery_claimed(domain_app, services):
    payment_id, job = new_payment()
    with pytest.raises(PermanentJobError):
        # Declined, then the hook of the same delivery, as the engine runs it.
        charge_payment_declined(payment_id, token=1)
    payment_failed_for_good(delivery(job, 1), "card_declined")
    assert payment_state(payment_id)["status"] == "failed"
    assert services.alerts.received[-1]["alert"] == "payment failed"
    assert services.alerts.received[-1]["payment_id"] == payment_id

    payment_id, job = new_payment()
    # A delivery that failed before it claimed the row (its database was down): the hook claims it.
    payment_failed_for_good(delivery(job, 3), "OperationalError: database is locked")
    state = payment_state(payment_id)
    assert (state["status"], state["owner"]) == ("failed", 3)
    with pytest.raises(StaleDelivery):
        charge_payment(payment_id, token=2)
    assert payment_state(payment_id) == state


def charge_payment_declined(payment_id: int, *, token: int) -> None:
    with get_db().session() as session:
        session.get(Payment, payment_id).payment_method = "pm_card_chargeCustomerFail"
    charge_payment(payment_id, token=token)


# Email deliveries: the same fence on email_deliveries.owner_token.


def email_job(to: str) -> Job:
    return add_email_job({"to": to, "subject": "Receipt", "text": "hello"})


def delivery_row(job_id: str) -> dict[str, Any]:
    with get_db().session() as session:
        row = session.scalar(select(EmailDelivery).where(EmailDelivery.job_id == job_id))
        return {
            "status": row.status,
            "attempts": row.attempts,
            "owner": row.owner_token,
            "message_id": row.message_id,
            "reply": row.last_reply,
            "sent_at": row.sent_at,
        }


def deliveries(job_id: str) -> int:
    with get_db().session() as session:
        return session.scalar(select(func.count()).where(EmailDelivery.job_id == job_id))


def test_a_late_smtp_failure_does_not_undo_a_newer_deliverys_sent_email(domain_app, services, monkeypatch):
    to = f"rider-{secrets.token_hex(4)}@example.com"
    job = email_job(to)
    newer: list = []

    def frozen_then_refused(msg: Any) -> str:
        # Delivery 1 froze on the way to the server; delivery 2 sent the message meanwhile.
        monkeypatch.setattr(mail_service, "_deliver", real_deliver)
        newer.append(send_email(delivery(job, 2)))
        raise SmtpReplyError(451, "4.3.0 try again later")

    real_deliver = mail_service._deliver
    monkeypatch.setattr(mail_service, "_deliver", frozen_then_refused)

    with pytest.raises(TransientJobError):
        send_email(delivery(job, 1))
    [sent] = newer
    row = delivery_row(job.id)
    assert (row["status"], row["owner"], row["attempts"]) == ("sent", 2, 2)
    assert row["message_id"] == sent["messageId"]

    # Later still: delivery 1 starts over, and its final-failure hook runs.
    assert send_email(delivery(job, 1))["duplicate"] is True
    mark_delivery_failed(delivery(job, 1), "SMTP 451 4.3.0 try again later")
    assert delivery_row(job.id) == row
    assert len(services.smtp.handler.messages_to(to)) == 1


def test_a_stale_delivery_does_not_start_over_a_newer_one_sending(domain_app, services, monkeypatch):
    to = f"rider-{secrets.token_hex(4)}@example.com"
    job = email_job(to)
    stale: list = []

    def meanwhile(msg: Any) -> str:
        # Delivery 2 is talking to the server when delivery 1 (woken) begins again.
        with pytest.raises(StaleDelivery):
            send_email(delivery(job, 1))
        stale.append(delivery_row(job.id))
        return real_deliver(msg)

    real_deliver = mail_service._deliver
    monkeypatch.setattr(mail_service, "_deliver", meanwhile)
    send_email(delivery(job, 2))

    [during] = stale
    assert (during["status"], during["owner"], during["attempts"]) == ("sending", 2, 1)
    assert delivery_row(job.id)["status"] == "sent"
    assert deliveries(job.id) == 1
    assert len(services.smtp.handler.messages_to(to)) == 1


def test_a_message_sent_by_a_replaced_delivery_is_recorded_sent(domain_app, services, monkeypatch):
    # Delivery 1's message was accepted after delivery 2 had claimed the row and failed to
    # send it: the row says sent, so no third delivery sends it again.
    to = f"rider-{secrets.token_hex(4)}@example.com"
    job = email_job(to)

    def newer_fails_first(msg: Any) -> str:
        monkeypatch.setattr(mail_service, "_deliver", refused)
        with pytest.raises(TransientJobError):
            send_email(delivery(job, 2))
        assert delivery_row(job.id)["status"] == "retrying"
        return real_deliver(msg)

    def refused(msg: Any) -> str:
        raise SmtpReplyError(451, "4.3.0 try again later")

    real_deliver = mail_service._deliver
    monkeypatch.setattr(mail_service, "_deliver", newer_fails_first)
    result = send_email(delivery(job, 1))

    row = delivery_row(job.id)
    assert (row["status"], row["message_id"], row["owner"]) == ("sent", result["messageId"], 2)
    assert send_email(delivery(job, 3))["duplicate"] is True
    assert len(services.smtp.handler.messages_to(to)) == 1
