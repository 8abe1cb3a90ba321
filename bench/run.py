"""The benchmark suite: one command, every figure measured against a baseline in the same run.

    bash scripts/run-bench.sh [--quick]

(a) API enqueue vs GET /healthz on the same gunicorn; (b) drain of CPU-light
jobs through the full path vs a bare Celery no-op task; (c) I/O-bound email
jobs (SMTP answers after 100 ms) per pool vs Little's-law ceiling; (d)
enqueue-to-start latency; (e) memory. Writes docs/benchmarks.md and
docs/benchmarks.png. Everything runs on loopback and stops by itself.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from bench import wrk
from devstack.processes import free_port, start_celery_worker, start_redis, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SMTP_LATENCY_S = 0.1
API_CONNECTIONS = 16
# The analytics worker's shipped prefetch (docker-compose.yml, Procfile), used for (b).
DRAIN_PREFETCH = 4
# add_bulk call size in (b).
BULK_CHUNK = 1000
# (c): pool, concurrency per worker, worker processes. The email worker ships threads x32.
IO_CONFIGS = [
    ("prefork", 2, 1),
    ("prefork", 8, 1),
    ("threads", 16, 1),
    ("threads", 32, 1),
    ("threads", 64, 1),
    ("threads", 32, 2),
]
# gunicorn for (a): the API's shipped setting (Procfile, docker-compose.yml).
GUNICORN = (2, 8)


def process_tree(pid: int) -> list[int]:
    """A process and its children (a prefork worker's pool processes)."""
    with contextlib.suppress(OSError):
        return [pid, *(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    return [pid]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far, seconds."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextlib.contextmanager
def slow_smtp_sink(port: int) -> Iterator[None]:
    """An SMTP server on 127.0.0.1:port that accepts every message after SMTP_LATENCY_S."""
    from aiosmtpd.controller import Controller

    class SlowSink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(SMTP_LATENCY_S)
            return "250 OK"

    controller = Controller(SlowSink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield
    finally:
        controller.stop()


def start_consuming(celery: Any, workers: list[subprocess.Popen], queue: str) -> None:
    """Tell booted workers, in one broadcast, to consume queue as well (Celery's add_consumer)."""
    nodes = [w.node for w in workers]  # type: ignore[attr-defined]
    replies = celery.control.add_consumer(queue, destination=nodes, reply=True, timeout=10)
    if len(replies) != len(nodes):
        raise RuntimeError(f"add_consumer answered by {len(replies)} of {len(nodes)} workers: {replies}")


def start_delays(store: Any, jobs: list[Any]) -> list[float]:
    """Milliseconds from each job's creation to the start of its first attempt."""
    found = store.get_many([job.id for job in jobs])
    return [job.processed_on - job.created_at for job in found if job is not None and job.processed_on]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 2) if values else 0.0


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.gunicorn = GUNICORN
        self.tmp = Path(tempfile.mkdtemp(prefix="rideshare-bench-"))
        port = free_port()
        self.redis_proc = start_redis(self.tmp / "redis", port)
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.redis = redis.Redis.from_url(self.redis_url)
        self.smtp_port = free_port()
        self.env = {
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url(),
            "RIDESHARE_VAR_DIR": str(self.tmp),
            "SECRET_KEY": "bench-secret-key-of-at-least-thirty-two-bytes",
            "RATELIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "JOB_KEY_PREFIX": "bench",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
        }
        os.environ.update(self.env)
        database = "PostgreSQL" if self.env["DATABASE_URL"].startswith("postgresql") else "SQLite"
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {database}"
        self.results: dict[str, Any] = {"machine": machine}
        self.procs: list[subprocess.Popen] = []

    def database_url(self) -> str:
        """PostgreSQL (a database of its own) when BENCH_POSTGRES_URL or the local one answers, else SQLite.

        SQLite serialises writers, which caps the I/O-bound and payment figures long
        before the job service does.
        """
        self.pg_admin = None
        base = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        try:
            import psycopg

            self.pg_admin = psycopg.connect(base.replace("+psycopg", ""), autocommit=True, connect_timeout=3)
        except Exception:  # noqa: BLE001 - any failure means: no PostgreSQL here
            return f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        self.pg_name = f"rideshare_bench_{secrets.token_hex(3)}"
        self.pg_admin.execute(f'CREATE DATABASE "{self.pg_name}"')
        return base.rsplit("/", 1)[0] + f"/{self.pg_name}"

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)
        stop(self.redis_proc)
        if self.pg_admin is not None:
            self.pg_admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            self.pg_admin.close()

    def worker(
        self,
        app: str,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        env: dict | None = None,
        queues: str = "analytics,email",
    ) -> subprocess.Popen:
        log = self.tmp / f"worker-{secrets.token_hex(3)}.log"
        name = f"bench-{secrets.token_hex(3)}@%h"
        proc = start_celery_worker(
            {**self.env, **(env or {})},
            log,
            app=app,
            queues=queues,
            concurrency=concurrency,
            pool=pool,
            name=name,
            cwd=ROOT,
        )
        proc.node = name.replace("%h", platform.node())  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def retire(self, proc: subprocess.Popen) -> None:
        stop(proc)
        self.procs.remove(proc)

    def timed_drain(
        self, app: Any, done: Any, n: int, *, workers: int = 1, pool: str = "prefork", concurrency: int = 2
    ) -> tuple[float, list[subprocess.Popen]]:
        """Jobs/s for n jobs already in the analytics queue, from the moment `workers` workers all start on it.

        The workers boot on the idle email queue and are then told, in one broadcast,
        to consume analytics too, so no worker gets a head start while others boot.
        """
        env = {"CELERY_PREFETCH_MULTIPLIER": str(DRAIN_PREFETCH)}
        procs = [self.worker(app, pool=pool, concurrency=concurrency, env=env, queues="email") for _ in range(workers)]
        started = time.perf_counter()
        start_consuming(self.celery_apps[app], procs, "analytics")
        deadline = time.monotonic() + 600
        while done() < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return n / (time.perf_counter() - started), procs

    # (b) CPU-light drain -----------------------------------------------------------

    def drain(self) -> None:
        n = 3000 if self.quick else 20000
        from bench import bare
        from bench.full import app as full_celery
        from bench.full import flask_app, noop_queue

        self.celery_apps = {"bench.bare": bare.app, "bench.full": full_celery}
        queue_ = None

        def bare_done() -> int:
            return int(self.redis.get("bench:bare:done") or 0)

        def full_done() -> int:
            return queue_.store.metrics().get("analytics:completed", 0)

        def fill(path: str, count: int) -> float:
            """Put count no-op jobs in the analytics queue one way; returns jobs/s."""
            self.redis.flushdb()
            started = time.perf_counter()
            if path == "bare":
                for _ in range(count):
                    bare.noop.apply_async(queue="analytics")
            elif path == "single":
                for _ in range(count):
                    queue_.add({})
            else:
                for i in range(0, count, BULK_CHUNK):
                    queue_.add_bulk([{}] * min(BULK_CHUNK, count - i))
            return count / (time.perf_counter() - started)

        with flask_app.app_context():
            queue_ = noop_queue()
            enqueue, drain = {}, {}
            for path, app, done in (
                ("bare", "bench.bare", bare_done),
                ("single", "bench.full", full_done),
                ("bulk", "bench.full", full_done),
            ):
                enqueue[path] = fill(path, n)
                drain[path], procs = self.timed_drain(app, done, n)
                if path == "single":
                    busy_rss = rss_mb(procs[0].pid)
                    light_ms, burst_ms = self.start_latency(queue_, n)
                for proc in procs:
                    self.retire(proc)
            idle = self.worker("bench.full")
            time.sleep(2)
            idle_rss = rss_mb(idle.pid)
            self.retire(idle)
            # Throughput as workers are added (solo pool: one process each), until the CPU is full.
            scaling = []
            m = n // 2
            for workers in (1, 2, 3, 4):
                row = {"workers": workers}
                for path in ("single", "bulk"):
                    fill(path, m)
                    row[path], procs = self.timed_drain("bench.full", full_done, m, workers=workers, pool="solo")
                    row[path] = round(row[path])
                    for proc in procs:
                        self.retire(proc)
                scaling.append(row)
            # (e) job-store memory per 10,000 retained jobs (broker lists left out)
            self.redis.flushdb()
            before = self.redis.info("memory")["used_memory"]
            for _ in range(10_000):
                queue_.add({"to": "rider@example.com", "subject": "Your receipt", "text": "Thanks for riding."})
            for key in self.redis.scan_iter("analytics*"):
                self.redis.delete(key)
            store_mb = (self.redis.info("memory")["used_memory"] - before) / 1e6
        self.results["drain"] = {
            "jobs": n,
            "settings": f"one worker, prefork x2, prefetch multiplier {DRAIN_PREFETCH}",
            "bare_enqueue": round(enqueue["bare"]),
            "full_enqueue": round(enqueue["single"]),
            "bulk_enqueue": round(enqueue["bulk"]),
            "bare_drain": round(drain["bare"]),
            "full_drain": round(drain["single"]),
            "bulk_drain": round(drain["bulk"]),
            "ratio": round(drain["single"] / drain["bare"], 2),
            "bulk_ratio": round(drain["bulk"] / drain["bare"], 2),
            "batch_size": queue_.batch_size,
        }
        self.results["scaling"] = scaling
        self.results["latency"] = {
            "light_p50": percentile(light_ms, 0.5),
            "light_p99": percentile(light_ms, 0.99),
            "burst_p50": percentile(burst_ms, 0.5),
            "burst_p99": percentile(burst_ms, 0.99),
        }
        self.results["memory"] = {
            "worker_idle_mb": idle_rss,
            "worker_busy_mb": busy_rss,
            "store_mb_per_10k": round(store_mb, 2),
        }

    def start_latency(self, queue: Any, n: int) -> tuple[list[float], list[float]]:
        """(d) enqueue-to-start, ms: one job every 10 ms, then a burst of 2,000, on the running worker.

        Kept after they complete (remove_on_complete=False), so their times can be read.
        """
        light = []
        for _ in range(200):
            light.append(queue.add({}, remove_on_complete=False))
            time.sleep(0.01)
        time.sleep(1)
        burst = [queue.add({}, remove_on_complete=False) for _ in range(2000)]
        deadline = time.monotonic() + 60
        while queue.store.metrics().get("analytics:completed", 0) < n + 2200 and time.monotonic() < deadline:
            time.sleep(0.05)
        return start_delays(queue.store, light), start_delays(queue.store, burst)

    # (c) I/O-bound drain -------------------------------------------------------------

    def io_bound(self) -> None:
        rows = []
        with slow_smtp_sink(self.smtp_port):
            for pool, concurrency, processes in IO_CONFIGS:
                self.redis.flushdb()
                ceiling = processes * concurrency / SMTP_LATENCY_S
                n = int(max(100, min(ceiling * (4 if self.quick else 8), 4000)))
                app = self.queue_emails(n)
                with app.app_context():
                    # Booted on the idle analytics queue, then all turned to email at once.
                    workers = [
                        self.worker("tasks", pool=pool, concurrency=concurrency, queues="analytics")
                        for _ in range(processes)
                    ]
                    store = app.extensions["jobs"].store
                    cpu_before = sum(cpu_seconds(w.pid) for w in workers)
                    started = time.perf_counter()
                    start_consuming(app.extensions["celery"], workers, "email")
                    deadline = time.monotonic() + 300
                    while store.metrics().get("email:completed", 0) < n and time.monotonic() < deadline:
                        time.sleep(0.02)
                    elapsed = time.perf_counter() - started
                    completed = store.metrics().get("email:completed", 0)
                    cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
                    rss = sum(rss_mb(w.pid) for w in workers)
                    for worker in workers:
                        self.retire(worker)
                app.extensions["db"].engine.dispose()
                rows.append(
                    {
                        "pool": pool,
                        "concurrency": concurrency,
                        "processes": processes,
                        "jobs": n,
                        "rate": round(completed / elapsed, 1),
                        "ceiling": ceiling,
                        "ratio": round(completed / elapsed / ceiling, 2),
                        "worker_cpu_ms_per_job": round(cpu * 1000 / max(1, completed), 2),
                        "worker_rss_mb": rss,
                    }
                )
        self.results["io"] = rows

    def queue_emails(self, n: int) -> Any:
        """A fresh app (schema migrated) with n email jobs waiting; the caller enters its context."""
        from rideshare import create_app
        from rideshare.cli import upgrade_database
        from rideshare.jobs import add_email_job

        app = create_app()
        with app.app_context():
            upgrade_database()
            for i in range(n):
                add_email_job({"to": f"r{i}@example.com", "subject": "s", "text": "t"}, remove_on_complete=True)
        return app

    # (a) API enqueue ----------------------------------------------------------------

    def api(self) -> None:
        self.redis.flushdb()
        from rideshare import create_app
        from rideshare.auth import issue_token
        from rideshare.cli import upgrade_database

        app = create_app()
        with app.app_context():
            upgrade_database()
            token = issue_token("42", ttl_seconds=3600)
        port = free_port()
        gunicorn = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "rideshare:create_app()",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(self.gunicorn[0]),
                "--threads",
                str(self.gunicorn[1]),
                "--no-control-socket",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(gunicorn)
        wait_for_port("127.0.0.1", port, timeout=30, proc=gunicorn)
        base = f"http://127.0.0.1:{port}"
        client = app.test_client()
        ride = client.post(
            "/rides",
            json={"riderId": "42", "driverId": "d", "pickup": "A", "dropoff": "B"},
            headers={"Authorization": f"Bearer {token}"},
        ).json["id"]
        seconds = 3 if self.quick else 8

        def load(path: str, method: str = "GET", body: dict | None = None, seconds: float = seconds) -> dict:
            """The figures of one endpoint under load, with the gunicorn workers' CPU per request."""
            cpu = cpu_seconds(gunicorn.pid)
            result = generate(path, method, body, seconds)
            result["server_cpu_ms_per_request"] = round(
                (cpu_seconds(gunicorn.pid) - cpu) * 1000 / max(1, result["requests"]), 3
            )
            return result

        def generate(path: str, method: str, body: dict | None, seconds: float) -> dict:
            headers = {"Authorization": f"Bearer {token}"}
            raw = json.dumps(body) if body is not None else None
            if wrk.available():
                return wrk.load(base + path, method, raw, headers, API_CONNECTIONS, seconds)
            args = [sys.executable, "-m", "bench.loadgen", base + path, "--method", method]
            args += ["--seconds", str(seconds), "--connections", str(API_CONNECTIONS)]
            args += ["--header", f"Authorization: Bearer {token}"]
            if raw is not None:
                args += ["--json", raw]
            return json.loads(subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout)

        load("/healthz", seconds=2)  # warm-up: every gunicorn worker has booted and served
        healthz = load("/healthz")
        welcome = load("/send-welcome-email", "POST", {"email": "a@example.com", "name": "Ann"})
        payment = load("/payments", "POST", {"amount": "10.00", "paymentMethod": "pm_card_visa", "rideId": ride})
        self.retire(gunicorn)
        app.extensions["db"].engine.dispose()
        self.results["api"] = {
            "healthz": healthz,
            "welcome": welcome,
            "payment": payment,
            "gunicorn": list(self.gunicorn),
            "welcome_ratio": round(welcome["rps"] / healthz["rps"], 2),
            "payment_ratio": round(payment["rps"] / healthz["rps"], 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer jobs and shorter runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    bench = Bench(args.quick)
    try:
        for name in ("drain", "io_bound", "api"):
            print(f"[bench] {name} ...", flush=True)
            getattr(bench, name)()
            print(json.dumps(bench.results, indent=1), flush=True)
    finally:
        bench.close()
    from bench.report import write_report

    write_report(bench.results, args.out)
    print(f"[bench] wrote {args.out / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
