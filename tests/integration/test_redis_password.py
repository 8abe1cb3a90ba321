"""Every Redis client honours REDIS_PASSWORD: the API, the job store, the rate limiter, workers and Flower.

On the RabbitMQ pass the broker is a RabbitMQ vhost and the Redis that needs the
password holds the job store and the rate limiter only.
"""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import redis

from devstack.processes import free_port, start_redis, stop, wait_for_port
from rideshare.cli import upgrade_database
from tests.conftest import REPO, close_app, stack_env, start_worker

pytestmark = pytest.mark.integration
PASSWORD = "s3cret/with@odd:chars"


def test_the_whole_path_runs_against_a_redis_that_requires_a_password(services, own_broker_url, tmp_path):
    port = free_port()
    server = start_redis(tmp_path / "redis", port, password=PASSWORD)
    env = stack_env(f"sqlite:///{tmp_path / 'pw.sqlite3'}", "unused", services, tmp_path)
    del env["REDIS_URL"]
    env["BROKER_URL"] = own_broker_url  # "": the broker is this Redis too
    # The original design's variable names, not a URL.
    env.update(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(port),
        REDIS_DB="2",
        REDIS_PASSWORD=PASSWORD,
        RATELIMIT_ENABLED="true",
        RATE_LIMIT_JOBS="100/minute",
    )
    saved = {k: os.environ.get(k) for k in ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD", "REDIS_URL")}
    os.environ.update({k: env[k] for k in ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD")})
    os.environ.pop("REDIS_URL", None)
    flower = worker = None
    try:
        from rideshare import create_app
        from rideshare.config import settings_from_env

        app = create_app({**settings_from_env(env), "TESTING": True})
        with app.app_context():
            upgrade_database()
        assert app.extensions["celery"].conf.broker_url.startswith(
            own_broker_url or f"redis://:{PASSWORD.replace('/', '%2F').replace('@', '%40').replace(':', '%3A')}@"
        )
        worker = start_worker(env, tmp_path / "worker.log", queues="email")
        client = app.test_client()
        accepted = client.post("/send-welcome-email", json={"email": "pw@example.com", "name": "Pat"})
        assert accepted.status_code == 202
        deadline = time.monotonic() + 20
        while app.extensions["jobs"].store.get(accepted.json["jobId"]).state != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert services.smtp.handler.messages_to("pw@example.com")
        # Without the password Redis refuses us: the password really is in use.
        with pytest.raises(redis.AuthenticationError), redis.Redis(port=port, db=2) as anonymous:
            anonymous.ping()
        # The rate limiter stored its counters in that Redis.
        with redis.Redis(port=port, db=2, password=PASSWORD) as authed:
            assert any(b"ratelimit" in k for k in authed.scan_iter())

        flower_port = free_port()
        with open(tmp_path / "flower.log", "ab") as out:
            flower = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tasks",
                    "flower",
                    "--address=127.0.0.1",
                    f"--port={flower_port}",
                ],
                cwd=REPO,
                env={**os.environ, **env, "FLOWER_BASIC_AUTH": "ops:pw"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port("127.0.0.1", flower_port, timeout=30, proc=flower)
        request = urllib.request.Request(f"http://127.0.0.1:{flower_port}/api/workers?refresh=1")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"ops:pw").decode())
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(request, timeout=15) as response:
                workers = json.loads(response.read())
            if workers or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert workers, "Flower reached the workers through the broker"
        close_app(app)
    finally:
        for proc in (flower, worker):
            if proc is not None:
                stop(proc)
        stop(server)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
