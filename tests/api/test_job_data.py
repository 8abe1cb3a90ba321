"""Job data is checked in full when the job is added: a value the worker could not read is a 422
naming its field (InvalidJobData naming it, in Python), and nothing is queued; never a job that
a worker fails later."""

import secrets

import pytest

from rideshare.jobs import InvalidJobData, add_analytics_job, add_email_job, add_payment_job, get_job, get_queue
from tests.api.test_rejections import PAYMENT, assert_error, create_ride, nothing_written

pytestmark = pytest.mark.integration


def added(stack, queue: str) -> int:
    return stack.app.extensions["jobs"].store.metrics().get(f"{queue}:added", 0)


def event(**extra) -> dict:
    return {
        "event": "ride_completed",
        "eventId": f"evt-{secrets.token_hex(6)}",
        "driverId": f"driver-{secrets.token_hex(3)}",
        "occurredAt": "2026-02-01T10:00:00+00:00",
        "data": {"fare": "2.00", "distance": 1.0, "duration": 60},
        **extra,
    }


def test_an_event_whose_time_is_not_a_time_is_refused_when_added(app, stack):
    before = added(stack, "analytics")
    with pytest.raises(InvalidJobData) as caught:
        add_analytics_job(event(occurredAt="yesterday"))
    assert set(caught.value.errors) == {"occurredAt"}
    assert "ISO 8601" in caught.value.errors["occurredAt"][0]
    assert added(stack, "analytics") == before


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"occurredAt": "2026-13-01T10:00:00"}, "occurredAt"),
        ({"occurredAt": ""}, "occurredAt"),
        ({"occurredAt": 1767261600}, "occurredAt"),
        ({"rideId": "ride-1"}, "rideId"),
        ({"rideId": 0}, "rideId"),
        ({"rideId": 2**31}, "rideId"),
        ({"userId": True}, "userId"),
        ({"driverId": "d" * 65}, "driverId"),
        ({"data": {"fare": "1.234"}}, "data"),
        ({"data": {"fare": "Infinity"}}, "data"),
        ({"data": {"fare": -1}}, "data"),
        ({"data": {"distance": "far"}}, "data"),
        ({"data": {"duration": "90"}}, "data"),
        ({"data": {"duration": 90.5}}, "data"),
        ({"data": None}, "data"),
    ],
)
def test_each_field_the_analytics_worker_reads_is_checked_when_added(app, stack, extra, field):
    before = added(stack, "analytics")
    with pytest.raises(InvalidJobData) as caught:
        add_analytics_job(event(**extra))
    assert set(caught.value.errors) == {field}, caught.value.errors
    assert added(stack, "analytics") == before


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"to": "ü@example.com"}, "to"),
        ({"to": "a@bücher.de"}, "to"),
        ({"subject": "Hi\ud800"}, "subject"),
        ({"subject": "Hi\r\nBcc: x@example.com"}, "subject"),
        ({"text": "body \udc00"}, "text"),
        ({"html": "<p>\ud800</p>"}, "html"),
    ],
)
def test_each_field_the_email_worker_reads_is_checked_when_added(app, stack, data, field):
    before = added(stack, "email")
    with pytest.raises(InvalidJobData) as caught:
        add_email_job({"to": "a@example.com", "subject": "Hi", "text": "hello", **data})
    assert set(caught.value.errors) == {field}, caught.value.errors
    assert added(stack, "email") == before


@pytest.mark.parametrize(
    ("data", "field"),
    [({"paymentId": "7"}, "paymentId"), ({"paymentId": 0}, "paymentId"), ({"paymentMethod": "4242"}, "paymentMethod")],
)
def test_each_field_the_payment_worker_reads_is_checked_when_added(app, stack, data, field):
    before = added(stack, "payment")
    with pytest.raises(InvalidJobData) as caught:
        add_payment_job({"paymentId": 7, **data})
    assert set(caught.value.errors) == {field}, caught.value.errors
    assert added(stack, "payment") == before


# --- through the HTTP API --------------------------------------------------------


@pytest.fixture
def headers(auth_headers) -> dict[str, str]:
    return auth_headers("42")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "ü@example.com", "name": "Ann"}, "email"),
        ({"email": "ann@example.com", "name": "Ann \ud800"}, "name"),
    ],
)
def test_a_welcome_email_the_worker_could_not_send_is_422_naming_the_field(client, stack, body, field):
    with nothing_written(stack):
        response = client.post("/send-welcome-email", json=body)
    assert_error(response, 422, {field})


def test_a_receipt_address_the_worker_could_not_send_to_is_422(client, stack, headers):
    ride_id = create_ride(client, headers)
    with nothing_written(stack):
        response = client.post(
            "/payments", json={**PAYMENT, "rideId": ride_id, "receiptEmail": "ü@example.com"}, headers=headers
        )
    assert_error(response, 422, {"receiptEmail"})


def test_an_admin_retry_with_a_time_that_is_not_a_time_is_422_naming_it(app, client, stack, auth_headers, monkeypatch):
    # A job queued before add checked every field (the check is skipped here to make one)
    # fails in the worker; an operator's retry with data still unreadable is refused.
    with monkeypatch.context() as patch:
        patch.setattr(get_queue("analytics"), "validate", lambda data: None)
        old = add_analytics_job(event(occurredAt="yesterday"))
    job = stack.wait_for_job(old.id)
    assert job.state == "failed" and job.failed_reason.startswith("ValueError: Invalid isoformat string")
    admin = auth_headers("1", "admin")

    before = added(stack, "analytics")
    with nothing_written(stack):
        response = client.post(
            f"/admin/jobs/{job.id}/retry", json={"data": {**job.data, "occurredAt": "yesterday"}}, headers=admin
        )
    body = assert_error(response, 422)
    assert set(body["errors"]["json"]["data"]) == {"occurredAt"}
    assert get_job(job.id).state == "failed" and added(stack, "analytics") == before

    fixed = client.post(
        f"/admin/jobs/{job.id}/retry",
        json={"data": {**job.data, "occurredAt": "2026-02-01T10:00:00+00:00"}},
        headers=admin,
    )
    assert fixed.status_code == 200, fixed.get_data(as_text=True)
    assert stack.wait_for_job(job.id).state == "completed"
