"""The fault suite's rig: its own redis-server (AOF, temp dir), SQLite file, workers it starts and kills.

Everything runs on loopback, every process is ended by the PID this rig got
when it started it, and each test is bounded in time.
"""

import os
import secrets
import signal
import subprocess
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask

from devstack.processes import free_port, start_redis, stop
from jobqueue.store import JobRecord
from rideshare.cli import upgrade_database
from tests.conftest import Services, app_from_env, stack_env, start_worker, wait_for_jobs

pytestmark = pytest.mark.faults


def children(pid: int) -> list[int]:
    """The direct children of a process we started (a worker's pool processes)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass
class Rig:
    env: dict[str, str]
    app: Flask
    services: Services
    tmp: Path
    redis_port: int
    redis_dir: Path
    redis_proc: subprocess.Popen | None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def store(self):  # noqa: ANN201
        return self.app.extensions["jobs"].store

    def kill_redis(self) -> None:
        assert self.redis_proc is not None
        self.redis_proc.send_signal(signal.SIGKILL)
        self.redis_proc.wait()
        self.redis_proc = None

    def start_redis(self) -> None:
        self.redis_proc = start_redis(self.redis_dir, self.redis_port)

    def worker(self, queues: str, concurrency: int = 4, pool: str = "prefork", **extra_env: str) -> subprocess.Popen:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        proc = start_worker({**self.env, **extra_env}, log, queues=queues, concurrency=concurrency, pool=pool)
        proc.log = log  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc

    def wait_all(self, job_ids: Iterable[str], timeout: float = 90, states=("completed", "failed")) -> list[JobRecord]:
        """Wait until every job is in one of states; returns them."""
        logs = [w.log for w in self.workers]  # type: ignore[attr-defined]
        return wait_for_jobs(self.store, job_ids, states, timeout, logs)


@pytest.fixture
def rig(services: Services, tmp_path: Path) -> Iterator[Rig]:
    port = free_port()
    redis_dir = tmp_path / "redis"
    proc = start_redis(redis_dir, port)
    env = stack_env(f"sqlite:///{tmp_path / 'faults.sqlite3'}", f"redis://127.0.0.1:{port}/0", services, tmp_path)
    env["JOB_KEY_PREFIX"] = f"faults{secrets.token_hex(3)}"
    # Keep every finished job, so the test can read each one's end state.
    env["JOB_KEEP_COMPLETED"] = env["JOB_KEEP_FAILED"] = "100000"
    # A message can be lost inside the broker hand-off itself (Redis killed between
    # BRPOP and kombu's unacked record): the stale-waiting sweep republishes it. In
    # production that waits 5 min; here 5 s, so the tests see it happen.
    app = app_from_env(env)
    with app.app_context():
        upgrade_database()
    urllib.request.urlopen(
        urllib.request.Request(f"{services.localstripe_url}/_config/data", method="DELETE"), timeout=5
    ).close()
    rig = Rig(env, app, services, tmp_path, port, redis_dir, proc)
    try:
        yield rig
    finally:
        for worker in rig.workers:
            stop(worker, timeout=20)
        if rig.redis_proc is not None:
            stop(rig.redis_proc)
        app.extensions["db"].engine.dispose()
        services.stripe.latency = 0.0
        services.stripe.faults.clear()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
