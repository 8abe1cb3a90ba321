"""RabbitMQ for the tests: the local server on 127.0.0.1:5672, a vhost of their own per use.

TEST_BROKER=rabbitmq runs the integration suite with RabbitMQ as the Celery
broker (scripts/run-tests.sh does so in its second pass); the job store stays in
Redis either way. Each stack, and each test that starts workers of its own, gets
a fresh vhost, deleted afterwards, so no two sets of workers share a queue.
"""

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from devstack.processes import port_open

RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
BROKERS = ("redis", "rabbitmq")
TEST_BROKER = os.environ.get("TEST_BROKER", "redis").strip().lower() or "redis"
if TEST_BROKER not in BROKERS:
    raise RuntimeError(f"TEST_BROKER={TEST_BROKER!r}: use one of {', '.join(BROKERS)}")
ON_RABBITMQ = TEST_BROKER == "rabbitmq"

_CTL = ["rabbitmqctl", "-q"]
_CTL_TIMEOUT_S = 60


def rabbitmq_missing() -> str | None:
    """Why no vhost can be made here (no server answering, no rabbitmqctl), or None when one can."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl not found"
    if not port_open(RABBITMQ_HOST, RABBITMQ_PORT):
        return f"no RabbitMQ answering on {RABBITMQ_HOST}:{RABBITMQ_PORT}"
    return None


def _ctl(*args: str) -> None:
    subprocess.run([*_CTL, *args], check=True, timeout=_CTL_TIMEOUT_S, capture_output=True)


@contextmanager
def rabbit_vhost(tag: str = "rideshare-test") -> Iterator[str]:
    """The amqp:// URL of a new vhost that guest may use; the vhost (and its queues) is deleted on exit."""
    vhost = f"{tag}-{secrets.token_hex(4)}"
    _ctl("add_vhost", vhost)
    try:
        _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"
    finally:
        subprocess.run([*_CTL, "delete_vhost", vhost], timeout=_CTL_TIMEOUT_S, capture_output=True)


def vhost_of(url: str) -> str:
    """The vhost named by an amqp:// URL."""
    return url.rsplit("/", 1)[1]


def list_queues(url: str, *columns: str) -> str:
    """rabbitmqctl list_queues for the vhost of url: one tab-separated row per queue."""
    return subprocess.run(
        [*_CTL, "list_queues", "-p", vhost_of(url), *columns],
        capture_output=True,
        text=True,
        check=True,
        timeout=_CTL_TIMEOUT_S,
    ).stdout
