"""Every 4xx (and 503) path of the HTTP API, against the real stack.

Each rejected request must answer with a JSON body that names what was wrong,
and must leave nothing behind: no job in the job store, no message on a broker
queue, no SQL row (and no changed ride).
"""

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
from flask import Flask
from sqlalchemy import func, select

from devstack.processes import free_port
from jobqueue.store import STATES
from rideshare.db import get_db
from rideshare.payments.models import Payment
from rideshare.rides.models import Ride
from tests.conftest import Stack, app_from_env

pytestmark = pytest.mark.integration

QUEUES = ("email", "analytics", "payment")
RIDE = {"riderId": "42", "driverId": "d-7", "pickup": "Main St", "dropoff": "Airport"}
COMPLETION = {"driverId": "d-7", "fare": "23.40", "distance": 12.5, "duration": 1260}
PAYMENT = {"amount": "25.50", "paymentMethod": "pm_card_visa"}


# --- what the stack holds ----------------------------------------------------


def job_ids(stack: Stack, queue: str) -> set[str]:
    store = stack.app.extensions["jobs"].store
    ids: set[str] = set()
    for state in STATES:
        ids.update(store.redis.zrange(store.keys.queue(queue, state), 0, -1))
    return ids


def sql_count(model: type) -> int:
    with get_db().session() as session:
        return session.scalar(select(func.count()).select_from(model))


def snapshot(stack: Stack) -> dict[str, Any]:
    """Jobs (per queue: count and ids), broker queue lengths and SQL row counts."""
    store = stack.app.extensions["jobs"].store
    with stack.app.app_context():
        rows = {"rides": sql_count(Ride), "payments": sql_count(Payment)}
    added = store.metrics()
    return {
        # The store's "added" counters only ever grow, and only when a job is added:
        # unlike counts per state or broker list lengths, jobs of earlier tests that
        # move on, get published when due, or are trimmed by retention leave them be.
        "added": {q: added.get(f"{q}:added", 0) for q in QUEUES},
        "job_ids": {q: job_ids(stack, q) for q in QUEUES},
        "rows": rows,
    }


@contextmanager
def nothing_written(stack: Stack) -> Iterator[None]:
    before = snapshot(stack)
    yield
    after = snapshot(stack)
    new_jobs = {q: after["job_ids"][q] - before["job_ids"][q] for q in QUEUES}
    assert new_jobs == {q: set() for q in QUEUES}, f"jobs were created: {new_jobs}"
    assert after["added"] == before["added"]
    assert after["rows"] == before["rows"]


def assert_error(response, status: int, fields: set[str] | None = None) -> dict[str, Any]:
    """A JSON error with this status and a message; for a 422, errors.json names exactly `fields`."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == status
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"], body  # every error says what was wrong
    if fields is not None:
        named = body["errors"]["json"]
        assert set(named) == fields, named
        for field in fields:
            assert named[field] and all(isinstance(m, str) and m for m in named[field]), named
    return body


# --- helpers -------------------------------------------------------------------


def create_ride(client, headers, **fields: str) -> int:
    response = client.post("/rides", json={**RIDE, **fields}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json["id"]


def ride_row(app: Flask, ride_id: int) -> dict[str, Any]:
    with app.app_context(), get_db().session() as session:
        ride = session.get(Ride, ride_id)
        return {
            "status": ride.status,
            "fare": ride.fare,
            "distance": ride.distance_km,
            "duration": ride.duration_s,
            "completed_at": ride.completed_at,
        }


def token(claims: dict[str, Any], key: str, algorithm: str = "HS256") -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 600, **claims}, key, algorithm=algorithm)


@pytest.fixture
def headers(auth_headers) -> dict[str, str]:
    return auth_headers("42")


@pytest.fixture
def ride_id(client, headers) -> int:
    return create_ride(client, headers)


# --- authentication ------------------------------------------------------------

AUTHENTICATED = [
    ("POST", "/rides", RIDE),
    ("POST", "/rides/1/complete", COMPLETION),
    ("POST", "/payments", {**PAYMENT, "rideId": 1}),
    ("GET", "/payments/1", None),
    ("GET", "/jobs/some-job", None),
]


@pytest.mark.parametrize(("method", "path", "body"), AUTHENTICATED, ids=[f"{m} {p}" for m, p, _ in AUTHENTICATED])
def test_no_token_is_401_with_challenge(client, stack, method, path, body):
    with nothing_written(stack):
        response = client.open(path, method=method, json=body)
    payload = assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in payload["message"]


MALFORMED = {
    "basic scheme": "Basic dXNlcjpwYXNz",
    "bearer without token": "Bearer",
    "bearer with blank token": "Bearer    ",
    "token scheme": "Token abc.def.ghi",
    "not a jwt": "Bearer not-a-jwt",
}


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize(("method", "path", "body"), AUTHENTICATED, ids=[f"{m} {p}" for m, p, _ in AUTHENTICATED])
def test_malformed_authorization_is_401(client, stack, method, path, body, header):
    with nothing_written(stack):
        response = client.open(path, method=method, json=body, headers={"Authorization": header})
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _tampered(secret: str) -> str:
    """A validly signed user token whose payload was swapped for an admin one."""
    header, _, signature = token({"sub": "42", "role": "user"}, secret).split(".")
    payload = token({"sub": "42", "role": "admin"}, secret).split(".")[1]
    return f"{header}.{payload}.{signature}"


# Each makes a token from the app's SECRET_KEY.
BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "bad signature": lambda _: token({"sub": "42", "role": "user"}, "another-secret-key-of-at-least-32-bytes"),
    "unknown role": lambda secret: token({"sub": "42", "role": "root"}, secret),
    "no role": lambda secret: token({"sub": "42"}, secret),
    "no subject": lambda secret: token({"role": "user"}, secret),
    "no expiry": lambda secret: jwt.encode({"sub": "42", "role": "user"}, secret, algorithm="HS256"),
    "alg none": lambda _: token({"sub": "42", "role": "admin"}, "", algorithm="none"),
    "tampered payload": _tampered,
}


def test_a_token_made_like_the_bad_ones_but_valid_is_accepted(client, stack):
    """The forged tokens below differ from a good one only in what they name."""
    good = token({"sub": "42", "role": "user"}, stack.env["SECRET_KEY"])
    response = client.get("/jobs/no-such-job", headers={"Authorization": f"Bearer {good}"})
    assert_error(response, 404)


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_invalid_token_is_401(client, stack, make):
    bad = make(stack.env["SECRET_KEY"])
    with nothing_written(stack):
        response = client.post("/rides", json=RIDE, headers={"Authorization": f"Bearer {bad}"})
    body = assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["message"] in ("token is not valid", "token has an unknown role")


@pytest.mark.parametrize("ttl", [-10, 0])
@pytest.mark.parametrize(("method", "path", "body"), AUTHENTICATED, ids=[f"{m} {p}" for m, p, _ in AUTHENTICATED])
def test_expired_token_is_401(client, stack, auth_headers, method, path, body, ttl):
    with nothing_written(stack):
        response = client.open(path, method=method, json=body, headers=auth_headers("42", ttl=ttl))
    payload = assert_error(response, 401)
    assert payload["message"] == "token has expired"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer not-a-jwt", "Basic dXNlcjpwYXNz"])
def test_welcome_email_with_a_bad_token_is_401_even_though_a_token_is_optional(client, stack, header):
    with nothing_written(stack):
        response = client.post(
            "/send-welcome-email", json={"email": "ann@example.com", "name": "Ann"}, headers={"Authorization": header}
        )
    assert_error(response, 401)


def test_welcome_email_with_an_expired_token_is_401(client, stack, auth_headers):
    with nothing_written(stack):
        response = client.post(
            "/send-welcome-email", json={"email": "ann@example.com", "name": "Ann"}, headers=auth_headers(ttl=-10)
        )
    assert assert_error(response, 401)["message"] == "token has expired"


# --- POST /rides ---------------------------------------------------------------


def test_ride_without_fields_names_all_four(client, stack, headers):
    with nothing_written(stack):
        response = client.post("/rides", json={}, headers=headers)
    assert_error(response, 422, {"riderId", "driverId", "pickup", "dropoff"})


def test_ride_with_an_unknown_field_is_rejected(client, stack, headers):
    with nothing_written(stack):
        response = client.post("/rides", json={**RIDE, "fare": "10.00"}, headers=headers)
    assert_error(response, 422, {"fare"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("riderId", "r" * 65),
        ("driverId", "d" * 65),
        ("pickup", "p" * 201),
        ("dropoff", "x" * 201),
        ("riderId", ""),
        ("pickup", ""),
        ("driverId", 7.5),
        ("driverId", 7.0),
        ("driverId", -7),
        ("driverId", True),
        ("riderId", 2**63),
        ("riderId", ["42"]),
        ("dropoff", None),
        ("pickup", "Main St\r\nX-Injected: 1"),
        ("riderId", "42\x00"),
        ("riderId", "42\ud800"),
    ],
)
def test_ride_with_a_bad_field_names_it(client, stack, headers, field, value):
    with nothing_written(stack):
        response = client.post("/rides", json={**RIDE, field: value}, headers=headers)
    assert_error(response, 422, {field})


def test_ride_at_the_length_limits_is_accepted(client, stack, headers):
    """The limits above are the real ones: one character less is fine."""
    body = {"riderId": "r" * 64, "driverId": "d" * 64, "pickup": "p" * 200, "dropoff": "x" * 200}
    before = snapshot(stack)["rows"]["rides"]
    response = client.post("/rides", json=body, headers=headers)
    assert response.status_code == 201
    assert snapshot(stack)["rows"]["rides"] == before + 1


def test_ride_with_a_non_json_body_is_422_naming_the_fields(client, stack, headers):
    """A body that is not declared JSON is read as no body at all."""
    with nothing_written(stack):
        response = client.post(
            "/rides", data="riderId=42&driverId=d-7", headers=headers, content_type="application/x-www-form-urlencoded"
        )
    assert_error(response, 422, {"riderId", "driverId", "pickup", "dropoff"})


@pytest.mark.parametrize("raw", ['{"riderId": "42",', "not json", "{'riderId': '42'}"])
def test_ride_with_invalid_json_is_400_json(client, stack, headers, raw):
    with nothing_written(stack):
        response = client.post("/rides", data=raw, headers=headers, content_type="application/json")
    body = assert_error(response, 400)
    assert body["errors"]["json"] == ["Invalid JSON body."]


@pytest.mark.parametrize("raw", ["[1, 2]", '"a string"', "42", "null"])
def test_ride_with_a_json_body_that_is_not_an_object_is_422(client, stack, headers, raw):
    with nothing_written(stack):
        response = client.post("/rides", data=raw, headers=headers, content_type="application/json")
    body = assert_error(response, 422)
    assert body["errors"]["json"], body


# --- POST /rides/<id>/complete -------------------------------------------------


def test_completing_an_unknown_ride_is_404(client, stack, headers):
    with nothing_written(stack):
        response = client.post("/rides/987654321/complete", json=COMPLETION, headers=headers)
    assert "987654321" in assert_error(response, 404)["message"]


# Ids are 32-bit INTEGER columns: ids past them must be "not found", never a database
# error (PostgreSQL: 'integer out of range' from 2**31, SQLite: OverflowError from 2**63).
BEYOND_INTEGER_COLUMNS = [2**31 - 1, 2**31, 2**63 - 1, 2**63, 10**30]


@pytest.mark.parametrize("huge", BEYOND_INTEGER_COLUMNS)
def test_completing_a_ride_id_beyond_the_column_range_is_404(client, stack, headers, huge):
    with nothing_written(stack):
        response = client.post(f"/rides/{huge}/complete", json=COMPLETION, headers=headers)
    assert_error(response, 404)


def test_second_completion_is_409_and_changes_nothing(app, client, stack, headers, ride_id):
    first = client.post(f"/rides/{ride_id}/complete", json=COMPLETION, headers=headers)
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.json["jobId"].startswith(f"ride-completed-{ride_id}")
    assert stack.job(first.json["jobId"]) is not None
    completed = ride_row(app, ride_id)
    assert completed["status"] == "completed"

    with nothing_written(stack):
        again = client.post(
            f"/rides/{ride_id}/complete", json={**COMPLETION, "fare": "99.00", "distance": 1.0}, headers=headers
        )
    assert "already completed" in assert_error(again, 409)["message"]
    assert ride_row(app, ride_id) == completed


def test_completion_by_another_driver_is_422_naming_driver(app, client, stack, headers, ride_id):
    untouched = ride_row(app, ride_id)
    with nothing_written(stack):
        response = client.post(f"/rides/{ride_id}/complete", json={**COMPLETION, "driverId": "d-8"}, headers=headers)
    assert_error(response, 422, {"driverId"})
    assert ride_row(app, ride_id) == untouched
    assert untouched["status"] == "requested"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fare", "12.345"),
        ("fare", 12.345),
        ("fare", "-5.00"),
        ("fare", "0"),
        ("fare", "0.00"),
        ("fare", "100000.01"),
        ("fare", "NaN"),
        ("fare", "abc"),
        ("distance", -0.1),
        ("distance", 10_000.5),
        ("distance", "far"),
        ("duration", 90.5),
        ("duration", "90"),
        ("duration", -1),
        ("duration", True),
        ("driverId", ""),
    ],
)
def test_completion_with_a_bad_field_names_it(app, client, stack, headers, ride_id, field, value):
    untouched = ride_row(app, ride_id)
    with nothing_written(stack):
        response = client.post(f"/rides/{ride_id}/complete", json={**COMPLETION, field: value}, headers=headers)
    assert_error(response, 422, {field})
    assert ride_row(app, ride_id) == untouched


def test_completion_without_fields_names_all_four(app, client, stack, headers, ride_id):
    with nothing_written(stack):
        response = client.post(f"/rides/{ride_id}/complete", json={}, headers=headers)
    assert_error(response, 422, {"driverId", "fare", "distance", "duration"})
    assert ride_row(app, ride_id)["status"] == "requested"


def test_completion_at_the_fare_limit_is_accepted(app, client, stack, headers, ride_id):
    """The bound above is the real one: 100000.00 is the largest fare."""
    response = client.post(f"/rides/{ride_id}/complete", json={**COMPLETION, "fare": "100000.00"}, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert str(ride_row(app, ride_id)["fare"]) == "100000.00"


# --- POST /payments ------------------------------------------------------------


def test_payment_without_fields_names_amount_method_and_ride(client, stack, headers):
    with nothing_written(stack):
        response = client.post("/payments", json={}, headers=headers)
    assert_error(response, 422, {"amount", "paymentMethod", "rideId"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", "0.00"),
        ("amount", -1),
        ("amount", 1.234),
        ("amount", "1.234"),
        ("amount", 100000.01),
        ("amount", "100000.01"),
        ("amount", "abc"),
        ("amount", "Infinity"),
        ("amount", True),
        ("currency", "US"),
        ("currency", "USDX"),
        ("currency", "U$D"),
        ("currency", "ABC"),
        ("paymentMethod", "4242424242424242"),
        ("paymentMethod", "pm_"),
        ("paymentMethod", "pm_card visa"),
        ("paymentMethod", "pm_" + "x" * 253),
        ("rideId", "1"),
        ("rideId", 0),
        ("rideId", 1.5),
        ("receiptEmail", "not-an-email"),
        ("unexpected", "x"),
    ],
)
def test_payment_with_a_bad_field_names_it(client, stack, headers, ride_id, field, value):
    with nothing_written(stack):
        response = client.post("/payments", json={**PAYMENT, "rideId": ride_id, field: value}, headers=headers)
    assert_error(response, 422, {field})


def test_a_raw_card_number_is_never_accepted_nor_echoed(client, stack, headers, ride_id):
    card = "4242424242424242"
    with nothing_written(stack):
        response = client.post("/payments", json={**PAYMENT, "rideId": ride_id, "paymentMethod": card}, headers=headers)
    body = assert_error(response, 422, {"paymentMethod"})
    assert "pm_" in body["errors"]["json"]["paymentMethod"][0]
    assert card not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [("currency", "USD\n"), ("paymentMethod", "pm_card_visa\n"), ("currency", "\nUSD"), ("paymentMethod", "pm_x\r\n")],
)
def test_payment_with_a_trailing_newline_is_rejected(client, stack, headers, ride_id, field, value):
    with nothing_written(stack):
        response = client.post("/payments", json={**PAYMENT, "rideId": ride_id, field: value}, headers=headers)
    assert_error(response, 422, {field})


def test_payment_for_an_unknown_ride_is_422_naming_ride(client, stack, headers):
    with nothing_written(stack):
        response = client.post("/payments", json={**PAYMENT, "rideId": 987654321}, headers=headers)
    body = assert_error(response, 422, {"rideId"})
    assert "987654321" in body["errors"]["json"]["rideId"][0]


@pytest.mark.parametrize("huge", BEYOND_INTEGER_COLUMNS)
def test_payment_for_a_ride_id_beyond_the_column_range_is_422(client, stack, headers, huge):
    with nothing_written(stack):
        response = client.post("/payments", json={**PAYMENT, "rideId": huge}, headers=headers)
    assert_error(response, 422, {"rideId"})


def test_payment_without_a_token_is_401(client, stack, headers, ride_id):
    with nothing_written(stack):
        response = client.post("/payments", json={**PAYMENT, "rideId": ride_id})
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_payment_at_the_amount_limit_is_accepted(client, stack, headers, ride_id):
    """The bounds above are the real ones: 0.01 and 100000.00 are both fine."""
    for amount in ("0.01", "100000.00"):
        response = client.post("/payments", json={**PAYMENT, "rideId": ride_id, "amount": amount}, headers=headers)
        assert response.status_code == 202, response.get_data(as_text=True)
        assert stack.job(response.json["jobId"]) is not None


# --- GET /payments/<id> --------------------------------------------------------


def test_unknown_payment_is_404(client, stack, headers):
    with nothing_written(stack):
        response = client.get("/payments/987654321", headers=headers)
    assert "987654321" in assert_error(response, 404)["message"]


@pytest.mark.parametrize("huge", BEYOND_INTEGER_COLUMNS)
def test_payment_id_beyond_the_column_range_is_404(client, stack, headers, huge):
    with nothing_written(stack):
        response = client.get(f"/payments/{huge}", headers=headers)
    assert_error(response, 404)


def test_another_users_payment_is_404_but_an_admin_can_read_it(client, stack, auth_headers, headers, ride_id):
    accepted = client.post("/payments", json={**PAYMENT, "rideId": ride_id}, headers=headers)
    assert accepted.status_code == 202
    path = f"/payments/{accepted.json['paymentId']}"
    assert client.get(path, headers=headers).status_code == 200

    assert_error(client.get(path, headers=auth_headers("7")), 404)
    admin = client.get(path, headers=auth_headers("1", role="admin"))
    assert admin.status_code == 200
    assert admin.json["id"] == accepted.json["paymentId"]


# --- POST /send-welcome-email --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"email": "not-an-email", "name": "Ann"}, {"email"}),
        ({"email": "ann@", "name": "Ann"}, {"email"}),
        ({"email": "ann@example.com\n", "name": "Ann"}, {"email"}),
        ({"email": "a" * 250 + "@example.com", "name": "Ann"}, {"email"}),
        ({"email": "ann@example.com"}, {"name"}),
        ({"email": "ann@example.com", "name": ""}, {"name"}),
        ({"email": "ann@example.com", "name": "A" * 101}, {"name"}),
        ({"email": "ann@example.com", "name": 42}, {"name"}),
        ({}, {"email", "name"}),
        ({"email": "ann@example.com", "name": "Ann", "bcc": "eve@example.com"}, {"bcc"}),
    ],
    ids=[
        "bad email",
        "no domain",
        "trailing newline",
        "email too long",
        "missing name",
        "empty name",
        "name too long",
        "name not a string",
        "empty body",
        "unknown field",
    ],
)
def test_welcome_email_with_bad_fields_names_them(client, stack, body, fields):
    with nothing_written(stack):
        response = client.post("/send-welcome-email", json=body)
    assert_error(response, 422, fields)


@pytest.mark.parametrize("name", ["Ann\r\nBcc: eve@example.com", "Ann\n", "Ann\x00"])
def test_welcome_email_name_with_a_line_break_is_rejected(client, stack, name):
    """The name goes into the Subject header: a line break there could never be sent (or would forge headers)."""
    with nothing_written(stack):
        response = client.post("/send-welcome-email", json={"email": "ann@example.com", "name": name})
    assert_error(response, 422, {"name"})


def test_welcome_email_name_at_the_limit_is_accepted(client, stack):
    response = client.post("/send-welcome-email", json={"email": "ann@example.com", "name": "A" * 100})
    assert response.status_code == 202
    assert stack.job(response.json["jobId"]).queue == "email"


# --- GET /jobs/<id> ------------------------------------------------------------


def test_unknown_job_is_404_json(client, stack, headers):
    with nothing_written(stack):
        response = client.get(f"/jobs/no-such-{secrets.token_hex(4)}", headers=headers)
    assert "not found" in assert_error(response, 404)["message"]


def test_another_users_job_is_404_but_an_admin_can_read_it(client, stack, auth_headers, headers):
    accepted = client.post("/send-welcome-email", json={"email": "ann@example.com", "name": "Ann"}, headers=headers)
    assert accepted.status_code == 202
    job_id = accepted.json["jobId"]
    assert stack.job(job_id).owner == "42"
    assert client.get(f"/jobs/{job_id}", headers=headers).status_code == 200

    other = client.get(f"/jobs/{job_id}", headers=auth_headers("7"))
    unknown = client.get("/jobs/no-such-job", headers=auth_headers("7"))
    # Indistinguishable from a job that does not exist.
    assert assert_error(other, 404)["message"] == f"job {job_id} not found"
    assert assert_error(unknown, 404)["message"] == "job no-such-job not found"

    admin = client.get(f"/jobs/{job_id}", headers=auth_headers("1", role="admin"))
    assert admin.status_code == 200
    assert (admin.json["id"], admin.json["queue"]) == (job_id, "email")


def test_an_anonymous_welcome_job_is_readable_only_by_an_admin(client, stack, auth_headers):
    accepted = client.post("/send-welcome-email", json={"email": "ann@example.com", "name": "Ann"})
    assert accepted.status_code == 202
    job_id = accepted.json["jobId"]
    assert_error(client.get(f"/jobs/{job_id}", headers=auth_headers("42")), 404)
    assert client.get(f"/jobs/{job_id}", headers=auth_headers("1", role="admin")).status_code == 200


def test_job_without_a_token_is_401(client, stack, headers):
    accepted = client.post("/send-welcome-email", json={"email": "ann@example.com", "name": "Ann"}, headers=headers)
    response = client.get(f"/jobs/{accepted.json['jobId']}")
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "state" not in response.get_json()


# --- routing and size limits ---------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/rides/1", "/rides/abc/complete", "/payments/abc", "/jobs/"])
def test_unknown_route_is_json_404(client, stack, headers, path):
    with nothing_written(stack):
        response = client.get(path, headers=headers)
    assert_error(response, 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/payments"),
        ("DELETE", "/rides"),
        ("GET", "/rides"),
        ("PUT", "/rides/1/complete"),
        ("GET", "/send-welcome-email"),
        ("DELETE", "/jobs/x"),
        ("POST", "/healthz"),
    ],
)
def test_wrong_method_is_json_405(client, stack, headers, method, path):
    with nothing_written(stack):
        response = client.open(path, method=method, headers=headers)
    assert_error(response, 405)
    # RFC 9110 15.5.6: a 405 must list the methods the resource does allow.
    allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
    assert method not in allowed
    assert allowed & {"GET", "POST"}, response.headers


def test_wrong_method_names_the_allowed_methods(client, headers):
    response = client.get("/payments", headers=headers)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["Allow"].split(",")} == {"POST", "OPTIONS"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/rides", {**RIDE, "pickup": "p" * (64 * 1024)}),
        ("/payments", {**PAYMENT, "rideId": 1, "receiptEmail": "a" * (64 * 1024)}),
        ("/send-welcome-email", {"email": "ann@example.com", "name": "A" * (64 * 1024)}),
    ],
)
def test_body_over_max_content_length_is_413_json(client, stack, headers, path, body):
    assert stack.app.config["MAX_CONTENT_LENGTH"] == 64 * 1024
    with nothing_written(stack):
        response = client.post(path, json=body, headers=headers)
    assert_error(response, 413)


def test_body_just_under_max_content_length_is_read(client, stack, headers):
    """The 413 is about size: a body under the limit is parsed (and then judged on its fields)."""
    padding = 64 * 1024 - 200
    with nothing_written(stack):
        response = client.post("/rides", json={**RIDE, "pickup": "p" * padding}, headers=headers)
    assert_error(response, 422, {"pickup"})


# --- broker and job store down ---------------------------------------------------


@contextmanager
def other_app(stack: Stack, env: dict[str, str], **overrides: Any) -> Iterator[Flask]:
    """A second app on the same database; the stack's Celery app stays the default."""
    app = app_from_env(env, **overrides)
    try:
        yield app
    finally:
        stack.app.extensions["celery"].set_default()
        app.extensions["celery"].close()
        app.extensions["jobs"].store.redis.close()
        app.extensions["db"].engine.dispose()


@pytest.fixture
def redis_down_app(stack: Stack) -> Iterator[Flask]:
    """Broker and job store both point at a port nothing listens on."""
    with other_app(stack, {**stack.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}) as app:
        yield app


@pytest.fixture
def broker_down_app(stack: Stack) -> Iterator[Flask]:
    """The job store is up; only the Celery broker is unreachable."""
    with other_app(stack, stack.env, CELERY={"broker_url": f"redis://127.0.0.1:{free_port()}/0"}) as app:
        yield app


def assert_unavailable(response) -> None:
    body = assert_error(response, 503)
    assert "nothing was queued" in body["message"]
    assert response.headers["Retry-After"] == "5"


def test_payment_while_the_queue_is_down_is_503_and_stores_nothing(client, stack, headers, ride_id, redis_down_app):
    with nothing_written(stack):
        response = redis_down_app.test_client().post("/payments", json={**PAYMENT, "rideId": ride_id}, headers=headers)
    assert_unavailable(response)


def test_a_payment_needs_no_broker(stack, headers, ride_id, broker_down_app):
    """Jobs never travel through the Celery broker: with only the broker down, a payment is accepted."""
    response = broker_down_app.test_client().post("/payments", json={**PAYMENT, "rideId": ride_id}, headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    job = stack.app.extensions["jobs"].store.get(response.json["jobId"])
    assert job is not None and job.queue == "payment"


def test_welcome_email_while_redis_is_down_is_503(stack, redis_down_app):
    with nothing_written(stack):
        response = redis_down_app.test_client().post(
            "/send-welcome-email", json={"email": "ann@example.com", "name": "Ann"}
        )
    assert_unavailable(response)


def test_delayed_welcome_email_is_kept_in_the_job_store_while_only_the_broker_is_down(stack, broker_down_app):
    """The welcome email waits 1 s; a delayed job lives in the job store (an outbox), not the broker."""
    response = broker_down_app.test_client().post(
        "/send-welcome-email", json={"email": "ann@example.com", "name": "Ann"}
    )
    assert response.status_code == 202
    job = stack.app.extensions["jobs"].store.get(response.json["jobId"])
    assert job is not None and job.state in ("delayed", "waiting", "active", "completed")


def test_completion_while_the_queue_is_down_is_503_and_can_be_retried(
    app, client, stack, headers, ride_id, redis_down_app
):
    down_app = redis_down_app
    untouched = ride_row(app, ride_id)
    with nothing_written(stack):
        response = down_app.test_client().post(f"/rides/{ride_id}/complete", json=COMPLETION, headers=headers)
    assert_unavailable(response)
    assert ride_row(app, ride_id) == untouched

    retried = client.post(f"/rides/{ride_id}/complete", json=COMPLETION, headers=headers)
    assert retried.status_code == 200, retried.get_data(as_text=True)
    assert ride_row(app, ride_id)["status"] == "completed"


def test_validation_still_answers_first_while_the_queue_is_down(redis_down_app, stack, headers):
    with nothing_written(stack):
        response = redis_down_app.test_client().post("/payments", json={}, headers=headers)
    assert_error(response, 422, {"amount", "paymentMethod", "rideId"})


# --- health and OpenAPI ----------------------------------------------------------


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_when_redis_and_database_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"redis": "ok", "database": "ok"}}


def test_readyz_is_503_when_redis_is_down(redis_down_app):
    response = redis_down_app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["checks"]["database"] == "ok"
    assert response.json["checks"]["redis"].startswith("unreachable")


def test_readyz_is_503_when_the_database_is_down(stack, tmp_path):
    missing = tmp_path / "no-such-dir" / "db.sqlite3"
    with other_app(stack, {**stack.env, "DATABASE_URL": f"sqlite:///{missing}"}) as down:
        missing.parent.rmdir()  # make_engine created the directory; without it SQLite cannot open
        response = down.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"redis": "ok", "database": "unreachable: OperationalError"}


@pytest.fixture
def spec(client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json


def test_openapi_lists_every_route(spec):
    assert spec["openapi"].startswith("3.")
    assert {"/rides", "/rides/{ride_id}/complete", "/payments", "/send-welcome-email", "/jobs/{job_id}"} <= set(
        spec["paths"]
    )
    assert "post" in spec["paths"]["/payments"] and "get" not in spec["paths"]["/payments"]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def request_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    body = spec["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    return _resolve(spec, body["content"]["application/json"]["schema"])


def test_openapi_payment_request_requires_amount_method_and_ride(spec):
    schema = request_schema(spec, "/payments")
    assert set(schema["required"]) == {"amount", "paymentMethod", "rideId"}
    assert {"amount", "currency", "paymentMethod", "rideId", "receiptEmail"} <= set(schema["properties"])


def test_openapi_other_request_schemas_list_their_required_fields(spec):
    assert set(request_schema(spec, "/rides")["required"]) == {"riderId", "driverId", "pickup", "dropoff"}
    assert set(request_schema(spec, "/rides/{ride_id}/complete")["required"]) == {
        "driverId",
        "fare",
        "distance",
        "duration",
    }
    assert set(request_schema(spec, "/send-welcome-email")["required"]) == {"email", "name"}


def test_openapi_declares_bearer_auth_on_protected_routes(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, method in [("/rides", "post"), ("/payments", "post"), ("/jobs/{job_id}", "get")]:
        assert {"bearerAuth": []} in spec["paths"][path][method]["security"], path


def test_openapi_numeric_bounds_are_numbers(spec):
    amount = request_schema(spec, "/payments")["properties"]["amount"]
    assert isinstance(amount["minimum"], int | float)
    assert isinstance(amount["maximum"], int | float)
    assert amount["maximum"] == 100000
    # The API rejects 0 (see test_payment_with_a_bad_field_names_it): the spec must not allow it.
    assert amount["minimum"] == 0.01 or (amount["minimum"] == 0 and amount.get("exclusiveMinimum") is True)
