"""The OpenAPI document states the rules the code enforces, and the code answers what the document says."""

import re
from typing import Any

import pytest

from rideshare.validation import AMOUNT_PATTERN, MAX_ID
from tests.api.test_rejections import PAYMENT, assert_error, create_ride

pytestmark = pytest.mark.integration


@pytest.fixture
def headers(auth_headers) -> dict[str, str]:
    return auth_headers("42")


@pytest.fixture
def admin(auth_headers) -> dict[str, str]:
    return auth_headers("1", "admin")


@pytest.fixture(scope="module")
def spec(stack) -> dict[str, Any]:
    return stack.app.test_client().get("/openapi.json").json


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def request_properties(spec: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return resolve(spec, body)["properties"]


def integers_taken(spec: dict[str, Any]):
    """Every integer the API reads: query and path parameters and request body properties."""
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict):
                continue
            for param in op.get("parameters", []):
                schema = resolve(spec, param).get("schema", {})
                if schema.get("type") == "integer":
                    yield f"{method} {path} {param['name']}", schema
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content:
                for name, prop in resolve(spec, content["schema"]).get("properties", {}).items():
                    if prop.get("type") == "integer":
                        yield f"{method} {path} {name}", prop


def test_every_integer_the_api_reads_is_bounded(spec):
    unbounded = [name for name, schema in integers_taken(spec) if "maximum" not in schema]
    assert unbounded == []
    assert len(list(integers_taken(spec))) >= 6


def test_the_amount_rules_are_in_the_document(spec):
    for path, field in [("/payments", "amount"), ("/rides/{ride_id}/complete", "fare")]:
        prop = request_properties(spec, path)[field]
        number, string = prop["oneOf"]
        assert number == {"type": "number", "multipleOf": 0.01, "minimum": 0.01, "maximum": 100000}
        assert string == {"type": "string", "pattern": f"^{AMOUNT_PATTERN.pattern}$"}
        documented = re.compile(string["pattern"], re.ASCII)
        assert all(documented.search(v) for v in ("25.50", "0.01", "100000", "7"))
        assert not any(documented.search(v) for v in ("1_000", "0", "100000.01", "1.234", "2.5E1", " 25"))
        assert "type" not in prop  # a number or a string, as oneOf says


def test_the_409_and_422_answers_are_in_the_document(spec):
    paths = spec["paths"]
    assert {"400", "409", "422", "503"} <= set(paths["/payments"]["post"]["responses"])
    assert {"404", "409", "422"} <= set(paths["/rides/{ride_id}/complete"]["post"]["responses"])
    assert {"404", "409"} <= set(paths["/admin/jobs/{job_id}"]["delete"]["responses"])
    assert {"404", "409", "422"} <= set(paths["/admin/jobs/{job_id}/retry"]["post"]["responses"])
    key = next(p for p in paths["/payments"]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    assert key["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}


def test_grace_ms_is_a_bounded_integer_in_the_document(spec):
    grace = request_properties(spec, "/admin/queues/{queue}/clean")["graceMs"]
    assert grace["type"] == "integer" and grace["minimum"] == 0 and grace["maximum"] > 0


def test_a_payment_reads_back_with_a_numeric_amount_as_documented(client, stack, headers, spec):
    ride_id = create_ride(client, headers)
    created = client.post("/payments", json={**PAYMENT, "rideId": ride_id}, headers=headers)
    assert created.status_code == 202, created.get_data(as_text=True)
    payment = client.get(f"/payments/{created.json['paymentId']}", headers=headers).json
    assert resolve(spec, spec["components"]["schemas"]["Payment"])["properties"]["amount"]["type"] == "number"
    assert payment["amount"] == 25.5 and isinstance(payment["amount"], float)


def test_a_completed_ride_reads_back_with_a_numeric_fare(client, stack, headers):
    ride_id = create_ride(client, headers)
    completion = {"driverId": "d-7", "fare": "23.40", "distance": 12.5, "duration": 1260}
    response = client.post(f"/rides/{ride_id}/complete", json=completion, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    ride = client.post(
        "/rides", json={"riderId": "42", "driverId": "d-7", "pickup": "a", "dropoff": "b"}, headers=headers
    )
    assert ride.json["fare"] is None  # a new ride has none; the schema says number or null


@pytest.mark.parametrize("grace", [2.589e-42, 1.5, 1.0, "10", True, 10 * 365 * 24 * 3600 * 1000 + 1, -1])
def test_grace_ms_takes_only_integers(client, stack, admin, grace):
    response = client.post("/admin/queues/email/clean", json={"state": "completed", "graceMs": grace}, headers=admin)
    assert_error(response, 422, {"graceMs"})


@pytest.mark.parametrize("before", ["36893488147419103231", str(MAX_ID + 1), "0", "-1", "1.5"])
def test_audit_before_is_bounded_not_a_500(client, stack, admin, before):
    response = client.get(f"/admin/audit?before={before}", headers=admin)
    assert_error(response, 422)
    assert "before" in response.json["errors"]["query"]


def test_audit_before_at_the_bound_is_answered(client, stack, admin):
    response = client.get(f"/admin/audit?before={MAX_ID}", headers=admin)
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("query", ["cursor=36893488147419103231", "stat=failed", "field=to"])
def test_job_list_query_is_checked(client, stack, admin, query):
    response = client.get(f"/admin/queues/email/jobs?{query}", headers=admin)
    assert_error(response, 422)


def test_an_unknown_audit_query_parameter_is_422(client, stack, admin):
    assert_error(client.get("/admin/audit?befor=5", headers=admin), 422)


def test_the_currency_list_is_in_the_document(spec):
    currency = request_properties(spec, "/payments")["currency"]
    assert {"USD", "usd", "EUR", "eur"} <= set(currency["enum"]) and "ABC" not in currency["enum"]


@pytest.mark.parametrize(("currency", "status"), [("eur", 202), ("EUR", 202), ("Eur", 422), ("ABC", 422)])
def test_currencies_are_taken_exactly_as_the_document_lists_them(client, stack, headers, currency, status):
    ride_id = create_ride(client, headers)
    response = client.post("/payments", json={**PAYMENT, "currency": currency, "rideId": ride_id}, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)


def test_the_job_control_routes_and_their_answers_are_in_the_document(spec):
    paths = spec["paths"]
    assert {"404", "409"} <= set(paths["/admin/jobs/{job_id}/cancel"]["post"]["responses"])
    assert {"404", "409", "422"} <= set(paths["/admin/jobs/{job_id}/snooze"]["post"]["responses"])
    assert {"404", "409", "422"} <= set(paths["/admin/jobs/{job_id}/data"]["put"]["responses"])
    assert {"200", "422"} <= set(paths["/admin/jobs/bulk"]["post"]["responses"])
    assert {"200", "404", "422"} <= set(paths["/admin/queues/{queue}/history"]["get"]["responses"])
    search = {p["name"] for p in paths["/admin/jobs"]["get"]["parameters"]}
    assert search == {
        "queue",
        "state",
        "name",
        "owner",
        "rideId",
        "paymentId",
        "q",
        "since",
        "until",
        "cursor",
        "limit",
    }
    for path in ("/jobs/{job_id}/events", "/admin/events"):
        operation = paths[path]["get"]
        assert "text/event-stream" in operation["responses"]["200"]["content"]
        assert "503" in operation["responses"]
        timeout = next(p for p in operation["parameters"] if p["name"] == "timeout")["schema"]
        assert timeout["minimum"] == 1 and timeout["maximum"] <= 300
        assert any(p["name"] == "Last-Event-ID" and p["in"] == "header" for p in operation["parameters"])
    states = paths["/admin/jobs"]["get"]["parameters"]
    assert {"cancelled", "expired"} <= set(next(p for p in states if p["name"] == "state")["schema"]["enum"])
