"""Bodies and headers an attacker sends: each gets a 400 JSON naming the problem, and nothing is stored.

Deep nesting, duplicate keys, NaN, endless numbers, over-long Idempotency-Keys and
amounts that Python's Decimal reads but the API does not define ("1_000"). The
header limits are checked through a real gunicorn with the shipped settings.
"""

import http.client
import json
import os
from collections.abc import Iterator

import pytest

from devstack.processes import stop
from rideshare import gunicorn_conf
from rideshare.json_body import MAX_JSON_DEPTH, nesting_depth
from rideshare.payments.api import MAX_IDEMPOTENCY_KEY
from tests.api.test_rejections import PAYMENT, RIDE, assert_error, create_ride, nothing_written
from tests.conftest import Stack
from tests.support.api_process import start_api

pytestmark = pytest.mark.integration


@pytest.fixture
def headers(auth_headers) -> dict[str, str]:
    return auth_headers("42")


@pytest.fixture
def ride_id(client, headers) -> int:
    return create_ride(client, headers)


def nested(depth: int) -> str:
    """A name field holding arrays nested so that the whole body is depth levels deep."""
    return '{"email": "ann@example.com", "name": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def post_raw(client, path: str, raw: str | bytes, headers: dict[str, str] | None = None):
    return client.post(path, data=raw, headers=headers or {}, content_type="application/json")


# --- nesting -------------------------------------------------------------------


def test_nesting_depth_counts_brackets_outside_strings_only():
    assert nesting_depth(b"{}") == 1
    assert nesting_depth(b'{"a": [[1], {"b": []}]}') == 4
    assert nesting_depth(b'{"a": "[[[[{{{{\\"[[["}') == 1
    assert nesting_depth(b"[" * 10_000) == 10_000
    assert nesting_depth(b"42") == 0


@pytest.mark.parametrize("path", ["/send-welcome-email", "/rides"])
def test_a_body_nested_ten_thousand_deep_is_400_before_parsing(client, stack, headers, path):
    """Unauthenticated too: the welcome email takes no token, and recursion would be a 500."""
    with nothing_written(stack):
        response = post_raw(client, path, "[" * 10_000 + "]" * 10_000)
    body = assert_error(response, 400)
    assert body["message"] == f"JSON body nested deeper than {MAX_JSON_DEPTH} levels"
    assert body["errors"]["json"] == [body["message"]]


def test_nesting_at_the_limit_is_parsed_and_one_more_is_not(client, stack):
    with nothing_written(stack):
        at_limit = post_raw(client, "/send-welcome-email", nested(MAX_JSON_DEPTH))
        over = post_raw(client, "/send-welcome-email", nested(MAX_JSON_DEPTH + 1))
    assert_error(at_limit, 422, {"name"})  # parsed, then judged on its fields
    assert "nested deeper" in assert_error(over, 400)["message"]


def test_brackets_inside_strings_do_not_count_as_nesting(client, stack):
    name = "[" * 40 + '"{' * 10
    response = post_raw(client, "/send-welcome-email", json.dumps({"email": "ann@example.com", "name": name[:100]}))
    assert response.status_code == 202, response.get_data(as_text=True)


# --- strict JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ('{"email": "ann@example.com", "name": "Ann", "name": "Bob"}', "'name'"),
        ('{"email": "a@example.com", "email": "a@example.com", "name": "Ann"}', "'email'"),
    ],
)
def test_duplicated_keys_are_400_naming_the_key(client, stack, raw, named):
    with nothing_written(stack):
        response = post_raw(client, "/send-welcome-email", raw)
    body = assert_error(response, 400)
    assert body["message"] == f"JSON body has a duplicate key {named}"


def test_a_duplicated_key_in_a_nested_object_is_400(client, stack, headers):
    raw = '{"data": {"to": "a@example.com", "to": "b@example.com"}}'
    with nothing_written(stack):
        response = post_raw(client, "/admin/jobs/x/retry", raw, headers)
    assert "duplicate key 'to'" in assert_error(response, 400)["message"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(client, stack, headers, ride_id, constant):
    raw = f'{{"amount": {constant}, "paymentMethod": "pm_card_visa", "rideId": {ride_id}}}'
    with nothing_written(stack):
        response = post_raw(client, "/payments", raw, headers)
    assert constant.lstrip("-") in assert_error(response, 400)["message"]


def test_a_number_too_long_to_convert_is_400_not_500(client, stack, headers):
    raw = '{"riderId": "42", "driverId": "d", "pickup": "a", "dropoff": "b", "n": ' + "9" * 5000 + "}"
    with nothing_written(stack):
        response = post_raw(client, "/rides", raw, headers)
    assert assert_error(response, 400)["errors"]["json"] == ["Invalid JSON body."]


# --- amounts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        "1_000",
        "007",
        "0",
        "0.00",
        "100001",
        "100000.01",
        " 25",
        "25 ",
        "+5",
        "-5",
        "2.5E1",
        "1e3",
        "Infinity",
        "NaN",
        "0x10",
        "\u0663",
        "1234567",
        "1.234",
        "25.",
        ".5",
        "",
        True,
        None,
        [25],
        {"v": 25},
        25.123,
        0,
        100000.01,
    ],
)
def test_amounts_outside_the_documented_forms_are_422_naming_amount(client, stack, headers, ride_id, amount):
    with nothing_written(stack):
        response = client.post("/payments", json={**PAYMENT, "amount": amount, "rideId": ride_id}, headers=headers)
    assert_error(response, 422, {"amount"})


@pytest.mark.parametrize("amount", ["25.50", "7", "0.01", "100000", "100000.00", 25.5, 7, 0.01, 100000])
def test_amounts_in_the_documented_forms_are_accepted(client, stack, headers, ride_id, amount):
    response = client.post("/payments", json={**PAYMENT, "amount": amount, "rideId": ride_id}, headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)


def test_a_fare_like_1_000_is_422_naming_fare(client, stack, headers, ride_id):
    completion = {"driverId": RIDE["driverId"], "fare": "1_000", "distance": 1.0, "duration": 60}
    with nothing_written(stack):
        response = client.post(f"/rides/{ride_id}/complete", json=completion, headers=headers)
    assert_error(response, 422, {"fare"})


# --- Idempotency-Key -----------------------------------------------------------


@pytest.mark.parametrize("length", [MAX_IDEMPOTENCY_KEY + 1, 10 * 1024])
def test_an_over_long_idempotency_key_is_400_json(client, stack, headers, ride_id, length):
    with nothing_written(stack):
        response = client.post(
            "/payments",
            json={**PAYMENT, "rideId": ride_id},
            headers={**headers, "Idempotency-Key": "k" * length},
        )
    body = assert_error(response, 400)
    assert body["message"] == f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
    assert body["errors"]["headers"]["Idempotency-Key"] == [body["message"]]


def test_an_idempotency_key_at_the_limit_is_accepted(client, stack, headers, ride_id):
    response = client.post(
        "/payments",
        json={**PAYMENT, "rideId": ride_id},
        headers={**headers, "Idempotency-Key": "k" * MAX_IDEMPOTENCY_KEY},
    )
    assert response.status_code == 202, response.get_data(as_text=True)


# --- through gunicorn with the shipped settings --------------------------------


@pytest.fixture(scope="module")
def gunicorn_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The API under gunicorn, configured as the Procfile, Dockerfile and compose file run it."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    proc, url = start_api({**os.environ, **stack.env}, log)
    try:
        yield ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    finally:
        stop(proc)


def raw_post(address: tuple[str, int], path: str, body: dict, headers: dict[str, str]) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def test_gunicorn_lets_a_10kb_idempotency_key_reach_the_app(gunicorn_url, stack, headers):
    with nothing_written(stack):
        status, content_type, raw = raw_post(
            gunicorn_url, "/payments", {**PAYMENT, "rideId": 1}, {**headers, "Idempotency-Key": "k" * 10 * 1024}
        )
    assert (status, content_type) == (400, "application/json"), raw[:300]
    assert "Idempotency-Key" in json.loads(raw)["message"]


def test_gunicorn_answers_only_beyond_its_documented_field_limit(gunicorn_url, stack, headers):
    """Past limit_request_field_size gunicorn refuses the request itself (README, "Limits")."""
    too_long = "k" * (gunicorn_conf.limit_request_field_size + 1)
    with nothing_written(stack):
        status, _, _ = raw_post(gunicorn_url, "/payments", {**PAYMENT, "rideId": 1}, {**headers, "X-Pad": too_long})
    assert status in (400, 431)
