"""Rate limits on job-creating routes: per user and per IP, 429 with Retry-After."""

import pytest

from tests.conftest import app_from_env

pytestmark = pytest.mark.integration


def test_job_routes_answer_429_with_retry_after_past_the_limit(stack, auth_headers):
    app = app_from_env({**stack.env, "RATELIMIT_ENABLED": "true", "RATE_LIMIT_JOBS": "3/minute"})
    client = app.test_client()
    before = sum(stack.app.extensions["jobs"].store.counts("email").values())
    body = {"email": "limit@example.com", "name": "Lim"}
    statuses = [client.post("/send-welcome-email", json=body, headers=auth_headers("77")).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    limited = client.post("/send-welcome-email", json=body, headers=auth_headers("77"))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.json["code"] == 429
    # Nothing was queued for the refused requests.
    assert sum(stack.app.extensions["jobs"].store.counts("email").values()) - before <= 3
    # Reads are not limited.
    assert client.get("/healthz").status_code == 200
    app.extensions["db"].engine.dispose()
