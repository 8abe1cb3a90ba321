"""Schemathesis fuzzes the API from its own /openapi.json: no 5xx, every response true to the schema.

Driven through Hypothesis directly (schemathesis's pytest plugin does not run
on this pytest); bounded at EXAMPLES cases per operation.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration
EXAMPLES = 25
# No 5xx; every status, content type and body as documented. (Schema-valid data
# can still be refused: a rideId with no ride, say, is a 422 by design.)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_api_never_answers_5xx_nor_breaks_its_schema(stack, auth_headers):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", stack.app)
    headers = auth_headers("1", "admin")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            case.call_and_validate(headers={**headers, **(case.headers or {})}, checks=CHECKS)

        fuzz()
