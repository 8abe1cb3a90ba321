"""User ids are taken as JSON numbers or strings and kept as strings: 42 and "42" are one user."""

import secrets

import pytest
from sqlalchemy import select

from rideshare.analytics.models import AnalyticsEvent, DriverStats
from rideshare.db import get_db
from rideshare.jobs import add_analytics_job
from rideshare.rides.models import Ride
from rideshare.validation import MAX_ID_LENGTH, MAX_NUMERIC_ID
from tests.api.test_rejections import assert_error
from tests.api.test_schema_truth import request_properties

pytestmark = pytest.mark.integration


def a_number() -> int:
    """A driver id no other test uses."""
    return 10**12 + secrets.randbelow(10**12)


def test_numeric_rider_and_driver_ids_are_stored_as_strings(app, client, stack, auth_headers):
    driver = a_number()
    response = client.post(
        "/rides", json={"riderId": 42, "driverId": driver, "pickup": "A", "dropoff": "B"}, headers=auth_headers("42")
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert (response.json["riderId"], response.json["driverId"]) == ("42", str(driver))
    with get_db().session() as session:
        ride = session.get(Ride, response.json["id"])
    assert (ride.rider_id, ride.driver_id) == ("42", str(driver))


def test_a_ride_requested_with_numbers_is_completed_with_numbers_by_its_rider(app, client, stack, auth_headers):
    """The rider's token says "42"; the ride, requested with 42, is theirs, and its driver 7 is "7"."""
    driver = a_number()
    headers = auth_headers("42")
    ride = client.post(
        "/rides", json={"riderId": 42, "driverId": driver, "pickup": "A", "dropoff": "B"}, headers=headers
    ).json
    completion = {"driverId": driver, "fare": 12, "distance": 3.5, "duration": 600}
    response = client.post(f"/rides/{ride['id']}/complete", json=completion, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    job = stack.wait_for_job(response.json["jobId"])
    assert job.state == "completed", job.failed_reason
    with get_db().session() as session:
        assert session.get(DriverStats, str(driver)).rides == 1


def test_the_driver_as_a_string_completes_a_ride_requested_with_a_number(app, client, stack, auth_headers):
    driver = a_number()
    headers = auth_headers("42")
    ride_id = client.post(
        "/rides", json={"riderId": "42", "driverId": driver, "pickup": "A", "dropoff": "B"}, headers=headers
    ).json["id"]
    completion = {"driverId": str(driver), "fare": "12.00", "distance": 3.5, "duration": 600}
    wrong = client.post(f"/rides/{ride_id}/complete", json={**completion, "driverId": driver + 1}, headers=headers)
    assert_error(wrong, 422, {"driverId"})
    response = client.post(f"/rides/{ride_id}/complete", json=completion, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_an_analytics_event_with_numeric_ids_is_recorded_with_string_ids(app, stack):
    driver, event_id = a_number(), f"evt-{secrets.token_hex(6)}"
    event = {
        "event": "ride_completed",
        "eventId": event_id,
        "rideId": "456",
        "userId": 123,
        "driverId": driver,
        "occurredAt": "2026-03-01T09:30:00+00:00",
        "data": {"fare": 9.5, "distance": 2.0, "duration": 300},
    }
    job = stack.wait_for_job(add_analytics_job(event).id)
    assert job.state == "completed", job.failed_reason
    with get_db().session() as session:
        row = session.scalars(select(AnalyticsEvent).where(AnalyticsEvent.event_id == event_id)).one()
    assert (row.ride_id, row.user_id, row.driver_id) == (456, "123", str(driver))


@pytest.mark.parametrize("value", [0, MAX_NUMERIC_ID, "0", "r" * MAX_ID_LENGTH, "rider 42"])
def test_ids_at_the_bounds_are_taken(client, stack, auth_headers, value):
    response = client.post(
        "/rides", json={"riderId": value, "driverId": "d", "pickup": "A", "dropoff": "B"}, headers=auth_headers("42")
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.json["riderId"] == str(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "integer from 0"),
        (MAX_NUMERIC_ID + 1, "integer from 0"),
        (1.5, "non-negative integer or a string"),
        (False, "non-negative integer or a string"),
        ({"id": 1}, "non-negative integer or a string"),
        ("", "1 to 64 characters"),
        ("r" * (MAX_ID_LENGTH + 1), "1 to 64 characters"),
        ("4\n2", "one line"),
    ],
)
def test_a_bad_id_is_422_naming_the_field_and_the_rule(client, stack, auth_headers, value, message):
    response = client.post(
        "/rides", json={"riderId": "42", "driverId": value, "pickup": "A", "dropoff": "B"}, headers=auth_headers("42")
    )
    body = assert_error(response, 422, {"driverId"})
    assert message in body["errors"]["json"]["driverId"][0]


@pytest.fixture(scope="module")
def spec(stack):
    return stack.app.test_client().get("/openapi.json").json


@pytest.mark.parametrize(
    ("path", "field"),
    [("/rides", "riderId"), ("/rides", "driverId"), ("/rides/{ride_id}/complete", "driverId")],
)
def test_the_document_says_an_id_is_an_integer_or_a_string(spec, path, field):
    prop = request_properties(spec, path)[field]
    assert "type" not in prop  # either form, as oneOf says
    integer, string = prop["oneOf"]
    assert integer == {"type": "integer", "minimum": 0, "maximum": MAX_NUMERIC_ID}
    assert string["type"] == "string" and (string["minLength"], string["maxLength"]) == (1, MAX_ID_LENGTH)
    assert prop["description"]
