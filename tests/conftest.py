"""Fixtures: a real Redis, SMTP server, localstripe, SQL database and Celery worker.

Servers already configured (TEST_REDIS_URL, TEST_POSTGRES_URL) or running on
their usual loopback ports are used; otherwise the tests start their own.
TEST_BROKER=rabbitmq makes RabbitMQ (127.0.0.1:5672, a vhost per stack) the
Celery broker instead of Redis; the job store stays in Redis.
"""

import contextlib
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from kombu.utils.url import maybe_sanitize_url

from devstack.processes import (
    free_port,
    port_open,
    redis_server_binary,
    start_celery_worker,
    start_python,
    start_redis,
    stop,
    wait_for_port,
)
from jobqueue.store import JobRecord
from rideshare import create_app
from rideshare.auth import issue_token
from rideshare.cli import upgrade_database
from rideshare.config import settings_from_env
from rideshare.queues import QUEUES
from tests.support.fault_proxy import FaultProxy
from tests.support.rabbitmq import ON_RABBITMQ, rabbit_vhost, rabbitmq_missing
from tests.support.smtp import SMTPServer
from tests.support.webhook import WebhookSink

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TEST_REDIS_DB = "14"
FLOW_LIMIT_NAMES = ("RATE_LIMIT", "CONCURRENCY_LIMIT", "GROUP_CONCURRENCY", "GROUP_RATE_LIMIT")


# The suite's own Redis requires a password with characters that need quoting in a
# URL, so every client (API, job store, rate limiter, workers, Flower) is shown to
# honour REDIS_PASSWORD on every run.
TEST_REDIS_PASSWORD = "test/pass@word:1"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the broker and the job store: TEST_REDIS_URL, else one started here with a password."""
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    try:
        redis_server_binary()
    except RuntimeError:
        if not port_open("127.0.0.1", 6379):
            raise
        yield f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"  # no binary to start one: the local server
        return
    port = free_port()
    proc = start_redis(tmp_path_factory.mktemp("redis"), port, password=TEST_REDIS_PASSWORD)
    try:
        yield f"redis://:{quote(TEST_REDIS_PASSWORD, safe='')}@127.0.0.1:{port}/{TEST_REDIS_DB}"
    finally:
        stop(proc)


def postgres_database() -> Iterator[str]:
    """A database of its own on the configured PostgreSQL (its URL), dropped afterwards; skips without one."""
    admin_url = POSTGRES_URL.replace("+psycopg", "")
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {admin_url}: {exc}")
    name = f"rideshare_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Each test that needs SQL runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'rideshare.sqlite3'}"
    else:
        yield from postgres_database()


@dataclass
class Services:
    smtp: SMTPServer
    stripe: FaultProxy
    localstripe_url: str
    alerts: WebhookSink


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """SMTP on loopback, localstripe behind a fault-injecting proxy, and an alert webhook."""
    logs = tmp_path_factory.mktemp("logs")
    stripe_port = free_port()
    localstripe = start_python(
        "devstack.localstripe_server", ["--port", str(stripe_port)], log=logs / "localstripe.log"
    )
    try:
        wait_for_port("127.0.0.1", stripe_port, proc=localstripe)
        target = f"http://127.0.0.1:{stripe_port}"
        with (
            SMTPServer(free_port()) as smtp,
            FaultProxy(free_port(), target) as proxy,
            WebhookSink(free_port()) as alerts,
        ):
            yield Services(smtp, proxy, target, alerts)
    finally:
        stop(localstripe)


@dataclass
class Stack:
    app: Flask
    env: dict[str, str]
    services: Services
    worker: subprocess.Popen
    worker_log: Path
    redis: redis.Redis

    def job(self, job_id: str) -> JobRecord | None:
        return self.app.extensions["jobs"].store.get(job_id)

    def wait_for_job(
        self, job_id: str, states: tuple[str, ...] = ("completed", "failed"), timeout: float = 30
    ) -> JobRecord:
        """Poll the job store until the job reaches one of states."""
        [job] = wait_for_jobs(self.app.extensions["jobs"].store, [job_id], states, timeout, [self.worker_log])
        return job


def wait_for_jobs(
    store: Any,
    job_ids: Iterable[str],
    states: tuple[str, ...] = ("completed", "failed"),
    timeout: float = 60,
    logs: Iterable[Path] = (),
) -> list[JobRecord]:
    """Poll store until every job is in one of states; they come back in the order asked.

    On timeout the error names a few jobs still pending and shows the tail of each log.
    """
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        jobs = store.get_many(ids)
        pending = [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None or job.state not in states]
        if not pending:
            return jobs
        if time.monotonic() > deadline:
            found = {job.id: job for job in jobs if job is not None}
            sample = [
                (i, found[i].state if i in found else None, found[i].attempts if i in found else 0) for i in pending[:5]
            ]
            tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
            raise AssertionError(f"{len(pending)} jobs not in {states} after {timeout} s: {sample}\n{tails}")
        time.sleep(0.05)


@contextlib.contextmanager
def own_app(env: dict[str, str], **overrides: Any) -> Iterator[Flask]:
    """An app on env, in its context, with a job store that starts and ends empty; closed afterwards.

    For tests that run workers of their own on own_queues_env (another Redis database).
    """
    app = app_from_env(env, **overrides)
    store = app.extensions["jobs"].store
    store.redis.flushdb()
    try:
        with app.app_context():
            yield app
    finally:
        store.redis.flushdb()
        close_app(app)


def stack_env(database_url: str, redis_url: str, services: Services, tmp: Path) -> dict[str, str]:
    """The environment shared by the in-process API and the worker processes."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        # Empty: the broker is REDIS_URL's Redis (an outer BROKER_URL or .env cannot leak in);
        # the stack sets a RabbitMQ vhost here on the RabbitMQ pass.
        "BROKER_URL": "",
        "SECRET_KEY": "test-secret-key-of-at-least-thirty-two-bytes",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(services.smtp.port),
        "STRIPE_API_BASE": services.stripe.url,
        "STRIPE_TIMEOUT": "3",
        "ALERT_WEBHOOK_URL": services.alerts.url,
        "JOB_KEY_PREFIX": f"rstest{secrets.token_hex(3)}",
        "RIDESHARE_VAR_DIR": str(tmp),
        "LOG_LEVEL": "INFO",
        # Celery's own per-message lines (received, succeeded): some tests read them to see
        # how jobs travelled. Workers leave them off by default.
        "CELERY_TASK_LOG": "true",
        # The suite sends bursts from one address; tests/api/test_rate_limit.py turns it on.
        "RATELIMIT_ENABLED": "false",
        # Two event streams per process (the default is 4): tests/integration/test_job_events.py
        # opens a third to see it refused.
        "EVENT_STREAMS_MAX": "2",
        # No shipped schedules (sweeps of rides and payments every 5 minutes) in the shared stack:
        # tests/integration/test_shipped_schedules.py turns them on for workers of its own.
        "SHIPPED_SCHEDULES": "false",
        # No flow limits unless a test sets them: a shell's or .env's PAYMENT_RATE_LIMIT and the
        # like must not reach the workers (which start with os.environ under this).
        **{f"{queue.upper()}_{name}": "" for queue in QUEUES for name in FLOW_LIMIT_NAMES},
    }


def app_from_env(env: dict[str, str], **overrides: Any) -> Flask:
    broker_url = env.get("BROKER_URL") or env["REDIS_URL"]
    config = {**settings_from_env(env), "TESTING": True, "CELERY": {"broker_url": broker_url}}
    return create_app({**config, **overrides})


def close_app(app: Flask) -> None:
    """Let go of an app's database and broker connections (before its RabbitMQ vhost is deleted)."""
    app.extensions["db"].engine.dispose()
    app.extensions["celery"].close()


def other_db(url: str) -> str:
    """The same Redis server, another database number, so no other worker sees these queues."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(db + 1) % 16}"))


@contextlib.contextmanager
def fresh_broker(rabbitmq: bool = ON_RABBITMQ) -> Iterator[str]:
    """BROKER_URL for a set of workers of its own: "" on Redis (the broker is REDIS_URL's Redis),
    a fresh RabbitMQ vhost, deleted afterwards, on RabbitMQ; skips when no RabbitMQ is found."""
    if not rabbitmq:
        yield ""
        return
    missing = rabbitmq_missing()
    if missing:
        pytest.skip(f"RabbitMQ as the broker, but {missing}")
    with rabbit_vhost() as url:
        yield url


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """check()'s first truthy value within timeout seconds, else its last value.

    For what a worker records just after the job store shows a job finished: the
    final-failure hook (a failed delivery row, an alert) runs after the job is stored as failed.
    """
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def start_worker(
    env: dict[str, str],
    log: Path,
    *,
    queues: str = "email,analytics,payment",
    concurrency: int = 4,
    name: str | None = None,
    pool: str = "prefork",
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """A real `celery -A tasks worker` process from the repo root, waited on until it is ready."""
    return start_celery_worker(
        env, log, queues=queues, concurrency=concurrency, name=name, pool=pool, cwd=REPO, extra=extra
    )


@pytest.fixture(scope="session")
def stack(
    database_url: str, redis_url: str, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The API app in-process and a real Celery worker on all three queues.

    The broker is the job store's Redis, or with TEST_BROKER=rabbitmq a RabbitMQ vhost of this stack's own.
    """
    tmp = tmp_path_factory.mktemp("stack")
    env = stack_env(database_url, redis_url, services, tmp)
    with contextlib.ExitStack() as cleanup:
        env["BROKER_URL"] = cleanup.enter_context(fresh_broker())
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        cleanup.callback(client.close)
        client.flushdb()
        # Each stack starts with an empty localstripe, so charge counts are per database.
        urllib.request.urlopen(
            urllib.request.Request(f"{services.localstripe_url}/_config/data", method="DELETE"), timeout=5
        ).close()
        app = app_from_env(env)
        cleanup.callback(close_app, app)
        broker = env["BROKER_URL"] or redis_url
        assert app.extensions["celery"].conf.broker_url == broker
        with app.app_context():
            upgrade_database()
        log = tmp / "worker.log"
        worker = start_worker(env, log)
        cleanup.callback(stop, worker)
        # The worker is on the same broker as the API: the one this pass tests.
        assert f"Connected to {maybe_sanitize_url(broker)}" in log.read_text(), log.read_text()[-3000:]
        yield Stack(app, env, services, worker, log, client)


@pytest.fixture
def sqlite_only(database_url: str) -> None:
    """For tests of the engine's own moves, which never touch SQL: run once, on SQLite."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the job store's moves do not depend on the database: run once, on SQLite")


@pytest.fixture
def postgres_only(database_url: str) -> None:
    """For load tests whose jobs write SQL from many threads at once: run once, on PostgreSQL
    (SQLite takes one writer at a time, so its lock waits, not the code, would be measured)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a load test of many concurrent SQL writers: run once, on PostgreSQL")


@pytest.fixture
def own_broker_url() -> Iterator[str]:
    """BROKER_URL for workers a test starts itself: see fresh_broker."""
    with fresh_broker() as url:
        yield url


@pytest.fixture
def own_queues_env(stack: Stack, own_broker_url: str) -> dict[str, str]:
    """stack.env with queues no other worker consumes: another Redis database for the job store
    (and, on Redis, the broker), and on RabbitMQ a vhost of the test's own."""
    return {**stack.env, "REDIS_URL": other_db(stack.env["REDIS_URL"]), "BROKER_URL": own_broker_url}


@pytest.fixture
def app(stack: Stack) -> Iterator[Flask]:
    with stack.app.app_context():
        yield stack.app


@pytest.fixture
def client(stack: Stack) -> FlaskClient:
    return stack.app.test_client()


@pytest.fixture
def auth_headers(stack: Stack) -> Callable[..., dict[str, str]]:
    """Authorization headers for a user id and role."""

    def make(user_id: str = "42", role: str = "user", ttl: int | None = None) -> dict[str, str]:
        with stack.app.app_context():
            return {"Authorization": f"Bearer {issue_token(user_id, role, ttl)}"}

    return make
