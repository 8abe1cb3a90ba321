"""Schemathesis fuzzes the API from its own /openapi.json with every check it has.

Driven through Hypothesis directly (schemathesis's pytest plugin does not run
on this pytest): for each operation, FUZZ_EXAMPLES cases (25 unless set) of
schema-valid data and as many of schema-breaking data, as a user, a viewer and
an admin. Every check schemathesis registers runs on each response, the same set
as `schemathesis run --checks all` (README, "Fuzzing"); the expected statuses
come from schemathesis.toml at the repo root, which the CLI reads too.
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.generation import GenerationMode

from jobqueue.limits import Limits
from rideshare.jobs import get_schedules

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
load_all_checks()
ALL_CHECKS = [check for check in CHECKS.get_all() if not is_check_class(check)]


def drops_token(case) -> bool:
    """Whether this case was made invalid by leaving out the Authorization header."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    mutations = getattr(data, "mutations", None) or ()
    return any(getattr(m, "parameter", None) == "Authorization" for m in mutations) or (
        "Authorization" in (getattr(data, "description", None) or "")
    )


@pytest.fixture
def limits_put_back(stack):
    """The fuzzed PUT /admin/queues/{queue}/limits and throttle change the session stack's queues:
    afterwards each queue has no limits, no group limits and no throttle again, as other tests expect."""
    yield
    with stack.app.app_context():
        for queue in stack.app.extensions["jobs"].queues.values():
            flow, keys = queue.flow, queue.store.keys
            queue.store.redis.delete(keys.queue(queue.name, "glimits"), keys.queue(queue.name, "throttle"))
            flow.set(Limits())  # lets groups held back by a fuzzed group limit go on
            queue.store.redis.delete(flow.key)  # and forgets it was an operator's (seeded again at start)


@pytest.fixture
def schedules_removed(stack):
    """A fuzzed PUT /admin/schedules/{schedule_id} that was valid made a schedule the session's
    worker would go on firing: afterwards none is left."""
    yield
    with stack.app.app_context():
        schedules = get_schedules()
        for schedule in schedules.list_all(history=False):
            schedules.remove(schedule.id)


def test_every_check_is_run():
    names = {check.__name__ for check in ALL_CHECKS}
    assert {"not_a_server_error", "positive_data_acceptance", "negative_data_rejection", "ignored_auth"} <= names
    assert len(ALL_CHECKS) == len(CHECKS.get_all()), "a class-based check would need instantiating here"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("role", ["user", "viewer", "admin"])
def test_api_never_answers_5xx_nor_breaks_its_schema(
    stack, auth_headers, role, mode, monkeypatch, limits_put_back, schedules_removed
):
    # Event streams (GET /jobs/{job_id}/events, /admin/events) end after their timeout: capped
    # here so each fuzzed stream ends at once, as a client that hangs up would end it.
    monkeypatch.setitem(stack.app.config, "EVENT_STREAM_MAX_SECONDS", 0.05)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", stack.app)
    headers = auth_headers("1", role)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            # A negative case that dropped the token is sent without it (a real 401), not with it put back.
            sent = dict(case.headers or {}) if drops_token(case) else {**headers, **(case.headers or {})}
            case.call_and_validate(headers=sent, checks=ALL_CHECKS)

        fuzz()
