"""The benchmark suite: one command, every figure measured against a baseline in the same run.

    bash scripts/run-bench.sh [--quick] [--rounds N] [--no-peers] [--no-profile]

Measured in one sitting, on loopback, everything stopping by itself:

- (b) drains of CPU-light no-op jobs through the full path (bench/full.py: queue API,
  job store, the worker's fetch, fencing, JobTask, the fenced finish) one `add()` or
  `add_bulk()` at a time, on one prefork -c 2 worker and on 2 solo workers, next to a
  bare Celery no-op (bench/bare.py: stock Celery with our celeryconfig on kombu's Redis
  transport, prefetch 4: what tracking and fencing cost per job) and to the peers
  (bench/peers_run.py: stock Celery `apply_async` with acks_late on the same pools,
  Dramatiq 2 x 8, BullMQ via node). Ours and the peers take turns, round by round
  (3 rounds, 1 with --quick; the order alternates), and every drain figure is the
  median over the rounds. Our workers fetch only for their free slots, so no prefetch
  setting applies to them; the Celery ones keep the analytics worker's prefetch 4.
  Each drain also reads the Redis server's CPU time (INFO cpu) and per-command times
  (INFO commandstats) from before its fill to its end: Redis CPU per job, add + fetch +
  finish for ours; one more single-add drain with Celery's task events off
  (CELERY_TASK_EVENTS=false) gives that figure without the events' publishes;
- (c) I/O-bound email jobs (SMTP answers after 100 ms) per pool vs the Little's-law
  ceiling, with the worker's CPU per job, on the shipped worker settings (threads,
  INFO logs);
- (a) the API's enqueue endpoints vs GET /healthz on the same gunicorn (2 x 8 threads,
  rideshare.gunicorn_conf), with wrk when installed, and the server's CPU per request;
- (d) enqueue-to-start latency; (e) memory, idle workers vs bare and stock Celery;
- py-spy breakdowns of an email job and a POST /payments (bench/profile.py), shown
  next to the "before" ones stored in bench/profiles.json.

How a drain is started: the jobs are queued first, the workers boot and connect without
consuming, and the clock starts at the one command that lets them all consume. For our
path that is resuming the queue, paused before the fill (the engine's own pause/resume:
`resume()` wakes an idle worker, whose fetch wakes the next while jobs are left); the
workers boot with `-Q bench` (or `-Q email` in (c)). For bare Celery (and stock Celery in
bench/peers_run.py) it is one `add_consumer` broadcast to workers booted on the idle
email queue. The time from that command to the first job done is kept (first_done_s).

Writes docs/benchmarks.md (the Targets table of issue 13 first) and docs/benchmarks.png.
A full run takes about 20 minutes on 2 cores; --quick (3,000 jobs, one round) a few.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from bench import wrk
from bench.procs import cpu_seconds, rss_mb
from devstack.processes import free_port, start_celery_worker, start_redis, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SMTP_LATENCY_S = 0.1
API_CONNECTIONS = 16
# The analytics worker's shipped prefetch (docker-compose.yml, Procfile), used for the bare
# Celery drain in (b), as bench/peers_run.py uses it for stock Celery. Our workers fetch
# only for their free slots: no prefetch applies to them.
DRAIN_PREFETCH = 4
# add_bulk call size in (b).
BULK_CHUNK = 1000
# (b): the drains, each (name, app, add path, pool, concurrency, worker processes).
# All with the shipped settings (Celery task events on), but single_quiet: the same as single
# with CELERY_TASK_EVENTS=false, so its Redis CPU is the add, the fetch and the finish alone.
DRAINS: list[tuple[str, str, str, str, int, int, dict[str, str]]] = [
    ("bare", "bench.bare", "bare", "prefork", 2, 1, {}),
    ("single", "bench.full", "single", "prefork", 2, 1, {}),
    ("single_solo2", "bench.full", "single", "solo", 1, 2, {}),
    ("bulk", "bench.full", "bulk", "prefork", 2, 1, {}),
    ("bulk_solo2", "bench.full", "bulk", "solo", 1, 2, {}),
    ("single_quiet", "bench.full", "single", "prefork", 2, 1, {"CELERY_TASK_EVENTS": "false"}),
]
# (c): pool, concurrency per worker, worker processes. The email worker ships threads x32
# (docker-compose.yml), grown by replicas, one per core: 2 x threads x32 is 64 on 2 cores.
IO_CONFIGS = [
    ("prefork", 2, 1),
    ("prefork", 8, 1),
    ("threads", 16, 1),
    ("threads", 32, 1),
    ("threads", 64, 1),
    ("threads", 32, 2),
]
# gunicorn for (a): the API's shipped setting (docker-compose.yml).
GUNICORN = (2, 8)
# Light load for (d): one job every 10 ms.
LIGHT_INTERVAL_S = 0.01


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
    answered: set[str] = set()
    # A reply can be lost on a loaded machine; add_consumer is idempotent, so ask again.
    for _ in range(3):
        missing = [node for node in nodes if node not in answered]
        replies = celery.control.add_consumer(queue, destination=missing, reply=True, timeout=10)
        answered |= {name for reply in replies for name in reply}
        if answered >= set(nodes):
            return
    raise RuntimeError(f"add_consumer answered by {len(answered)} of {len(nodes)} workers: {sorted(answered)}")


# What cost_per_job() returns per job, each in ms but script_calls (a count).
REDIS_COST_KEYS = ("cpu_ms", "main_ms", "scripts_ms", "blpop_ms", "publish_ms", "script_calls")
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


def cost_per_job(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, float]:
    """Redis's work per job between two Bench.redis_usage() readings.

    cpu_ms: the server's CPU time (user + system, all its threads: what a Redis host pays,
    socket reads and writes included); main_ms: its main thread's. From INFO commandstats
    (time inside commands only, no I/O): scripts_ms, the job store's scripts (EVALSHA,
    inclusive of the commands they run), blpop_ms (idle workers' wake markers, and kombu's
    consumer on other transports), publish_ms (Celery's task events and remote control);
    script_calls, script calls per job.
    """

    def delta(names: tuple[str, ...], field: int) -> float:
        total = 0
        for name in names:
            new = after["commands"].get(name, (0, 0))[field]
            total += new - before["commands"].get(name, (0, 0))[field]
        return total

    return {
        "cpu_ms": (after["cpu_s"] - before["cpu_s"]) * 1000 / n,
        "main_ms": (after["main_s"] - before["main_s"]) * 1000 / n,
        "scripts_ms": delta(SCRIPT_COMMANDS, 1) / 1000 / n,
        "blpop_ms": delta(("blpop",), 1) / 1000 / n,
        "publish_ms": delta(("publish",), 1) / 1000 / n,
        "script_calls": delta(SCRIPT_COMMANDS, 0) / n,
    }


def start_delays(store: Any, jobs: list[Any]) -> list[float]:
    """Milliseconds from each job's creation to the start of its first attempt."""
    found = store.get_many([job.id for job in jobs])
    return [job.processed_on - job.created_at for job in found if job is not None and job.processed_on]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 2) if values else 0.0


def merge_peer_rounds(per_round: list[dict[str, Any]]) -> dict[str, Any]:
    """One measure_peers() result from several single-round ones: medians of every figure."""
    merged: dict[str, Any] = {"jobs": per_round[0]["jobs"], "rounds": len(per_round), "logs": per_round[0]["logs"]}
    for peer in ("celery", "dramatiq", "bullmq"):
        rows = [r.get(peer, {"skipped": "not measured"}) for r in per_round]
        bad = next((row for row in rows if "skipped" in row or "error" in row), None)
        if bad is not None:
            merged[peer] = bad
            continue
        out: dict[str, Any] = {"version": rows[0]["version"], "settings": rows[0]["settings"]}
        for key, value in rows[0].items():
            if key in ("version", "settings", "rounds", "seconds") or not isinstance(value, int | float):
                continue
            value = statistics.median([row[key] for row in rows if key in row])
            if key.startswith("first"):
                out[key] = round(value, 3)
            elif key.endswith("_mb"):
                out[key] = round(value, 1)
            else:
                out[key] = round(value)
        out["idle_rss_mb"] = rows[0].get("idle_rss_mb", out.get("idle_rss_mb"))
        out["rounds"] = [row["rounds"][0] for row in rows]
        out["seconds"] = round(sum(row.get("seconds", 0) for row in rows), 1)
        merged[peer] = out
    return merged


class Bench:
    def __init__(self, quick: bool, rounds: int | None = None) -> None:
        self.quick = quick
        self.rounds = rounds or (1 if quick else 3)
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
            # The shipped log level (docker-compose.yml): every process logs what it logs in production.
            "LOG_LEVEL": "INFO",
            "JOB_KEY_PREFIX": "bench",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
        }
        os.environ.update(self.env)
        database = "PostgreSQL" if self.env["DATABASE_URL"].startswith("postgresql") else "SQLite"
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {database}"
        self.results: dict[str, Any] = {
            "machine": machine,
            "quick": quick,
            "rounds": self.rounds,
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
            "commit": self.commit(),
        }
        self.load_samples: list[float] = []
        self.procs: list[subprocess.Popen] = []

    @staticmethod
    def commit() -> str:
        done = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h"], capture_output=True, text=True)
        return done.stdout.strip()

    def sample_load(self) -> None:
        self.load_samples.append(os.getloadavg()[0])

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

    def client_logs_to_file(self) -> None:
        """The bench process's own app logs (job.created per add, at INFO) go to a file, not the terminal.

        They are still formatted and written, as a shipped API process does.
        """
        stream = open(self.tmp / "bench-client.log", "a")  # noqa: SIM115 - open for the run
        for name in ("rideshare", "jobqueue"):
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    handler.setStream(stream)

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
        self,
        app: str,
        done: Any,
        n: int,
        *,
        workers: int = 1,
        pool: str = "prefork",
        concurrency: int = 2,
        env: dict | None = None,
    ) -> dict[str, Any]:
        """Drain n jobs already queued with `workers` fresh workers, from the moment they may all start.

        bench.full: the jobs wait in the paused no-op queue; the workers boot with `-Q bench`,
        and the clock starts at resume(). bench.bare: the jobs wait in the broker's analytics
        list; the workers boot on the idle email queue and the clock
        starts at one add_consumer broadcast. Either way no worker gets a head start while
        others boot. Returns rate (jobs/s), cpu_ms (the workers' CPU per job), first_done_s
        (from the start to the first job done) and procs (still running: the caller retires them).
        """
        from bench.full import QUEUE, noop_queue

        ours = app == "bench.full"
        env = dict(env or {})
        # The same prefetch for every path: for ours, each process may hold that many jobs
        # fetched ahead (jobqueue.worker.Fetcher.capacity), as stock Celery reserves messages.
        env.setdefault("CELERY_PREFETCH_MULTIPLIER", str(DRAIN_PREFETCH))
        queues = QUEUE if ours else "email"
        procs = [self.worker(app, pool=pool, concurrency=concurrency, env=env, queues=queues) for _ in range(workers)]
        cpu = sum(cpu_seconds(p.pid) for p in procs)
        started = time.perf_counter()
        if ours:
            noop_queue().resume()
        else:
            start_consuming(self.celery_apps[app], procs, "analytics")
        deadline = time.monotonic() + 600
        first = None
        while (count := done()) < n and time.monotonic() < deadline:
            if count and first is None:
                first = time.perf_counter()
            time.sleep(0.005)
        ended = time.perf_counter()
        if done() < n:
            raise RuntimeError(f"{app} drained {done()} of {n} jobs in 600 s")
        cpu_ms = (sum(cpu_seconds(p.pid) for p in procs) - cpu) * 1000 / n
        self.sample_load()
        return {
            "rate": n / (ended - started),
            "cpu_ms": cpu_ms,
            "first_done_s": (first or ended) - started,
            "procs": procs,
        }

    def redis_usage(self) -> dict[str, Any]:
        """The Redis server's CPU time so far (seconds; all threads, and its main thread) and its
        per-command counters (INFO commandstats: calls and microseconds per command)."""
        cpu = self.redis.info("cpu")
        stats = self.redis.info("commandstats")
        return {
            "cpu_s": cpu["used_cpu_sys"] + cpu["used_cpu_user"],
            "main_s": cpu.get("used_cpu_sys_main_thread", 0) + cpu.get("used_cpu_user_main_thread", 0),
            "commands": {name.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for name, v in stats.items()},
        }

    # (b) CPU-light drain, with the peers round by round ------------------------------

    def drain(self) -> None:
        n = 3000 if self.quick else 20000
        from bench import bare
        from bench.full import QUEUE, flask_app, noop_queue
        from bench.full import app as full_celery

        self.client_logs_to_file()
        self.celery_apps = {"bench.bare": bare.app, "bench.full": full_celery}
        queue_ = None

        def bare_done() -> int:
            return int(self.redis.get("bench:bare:done") or 0)

        def full_done() -> int:
            return queue_.store.metrics().get(f"{QUEUE}:completed", 0)

        def fill(path: str, count: int) -> tuple[float, dict[str, Any]]:
            """Put count no-op jobs in the queue one way (ours into the paused no-op queue, bare into
            the broker's analytics list); returns (jobs/s, Redis's usage just before the fill)."""
            self.redis.flushdb()
            if path != "bare":
                queue_.pause()  # the workers boot without taking any; timed_drain resumes it
            usage = self.redis_usage()
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
            return count / (time.perf_counter() - started), usage

        per_round: list[dict[str, Any]] = []
        peer_rounds: list[dict[str, Any]] = []
        extras: dict[str, Any] = {}
        with flask_app.app_context():
            from rideshare.cli import upgrade_database

            # The schema, so the workers' housekeeping (the outbox relay) runs as in production.
            upgrade_database()
            queue_ = noop_queue()

            def ours(index: int) -> None:
                row: dict[str, Any] = {}
                for name, app, path, pool, concurrency, workers, env in DRAINS:
                    row[f"enqueue_{name}"], usage = fill(path, n)
                    done = bare_done if path == "bare" else full_done
                    found = self.timed_drain(app, done, n, workers=workers, pool=pool, concurrency=concurrency, env=env)
                    redis_cost = cost_per_job(usage, self.redis_usage(), n)
                    row[f"drain_{name}"], row[f"cpu_ms_{name}"] = found["rate"], found["cpu_ms"]
                    row[f"first_done_s_{name}"] = found["first_done_s"]
                    for key, value in redis_cost.items():
                        row[f"redis_{key}_{name}"] = value
                    procs = found["procs"]
                    if name == "single" and index == 0:
                        extras["busy_rss"] = rss_mb(procs[0].pid)
                        extras["latency"] = self.start_latency(queue_, n)
                    for proc in procs:
                        self.retire(proc)
                per_round.append(row)
                figures = json.dumps({k: round(v, 3) for k, v in row.items()})
                print(f"[bench] drain round {index + 1}: {figures}", flush=True)

            for index in range(self.rounds):
                # Ours and the peers take turns; who goes first alternates, so a drift in
                # the machine's load does not always fall on the same side.
                first_ours = index % 2 == 0
                if first_ours:
                    ours(index)
                if self.peers:
                    peer_rounds.append(self.peers_round(n))
                if not first_ours:
                    ours(index)

            # Idle RSS, same pool (prefork x2, main process + children), 2 s after ready.
            idle = {}
            for name, app, queues in (
                ("ours", "tasks", "analytics"),
                ("bench_full", "bench.full", QUEUE),
                ("bare", "bench.bare", "analytics"),
            ):
                proc = self.worker(app, pool="prefork", concurrency=2, queues=queues)
                time.sleep(2)
                idle[name] = rss_mb(proc.pid)
                self.retire(proc)
            # Throughput as workers are added (solo pool: one process each), until the CPU is full.
            scaling = []
            m = n // 2 if self.quick else n // 4
            for workers in (1, 2, 3, 4):
                row = {"workers": workers}
                for path in ("single", "bulk"):
                    fill(path, m)
                    found = self.timed_drain("bench.full", full_done, m, workers=workers, pool="solo")
                    row[path] = round(found["rate"])
                    for proc in found["procs"]:
                        self.retire(proc)
                scaling.append(row)
            # (e) job-store memory per 10,000 retained jobs (every byte a waiting job costs:
            # the store is the only queue, there are no broker messages beside it)
            self.redis.flushdb()
            before = self.redis.info("memory")["used_memory"]
            for _ in range(10_000):
                queue_.add({"to": "rider@example.com", "subject": "Your receipt", "text": "Thanks for riding."})
            store_mb = (self.redis.info("memory")["used_memory"] - before) / 1e6

        def med(key: str) -> float:
            # Unrounded: each figure is rounded below to its own precision.
            return statistics.median([row[key] for row in per_round])

        drain = {
            "jobs": n,
            "rounds": self.rounds,
            "settings": (
                f"prefetch multiplier {DRAIN_PREFETCH} for every path (ours: jobs fetched ahead per"
                f" process); ours gated by resume(), bare Celery by add_consumer;"
                " prefork: one worker -c 2; solo x2: two solo workers"
            ),
            "bulk_chunk": BULK_CHUNK,
            "prefetch": DRAIN_PREFETCH,
            "per_round": [
                {k: round(v, 4 if k.startswith(("cpu", "redis", "first")) else 1) for k, v in row.items()}
                for row in per_round
            ],
        }
        for name, *_ in DRAINS:
            drain[f"enqueue_{name}"] = round(med(f"enqueue_{name}"))
            drain[f"drain_{name}"] = round(med(f"drain_{name}"))
            drain[f"cpu_ms_{name}"] = round(med(f"cpu_ms_{name}"), 3)
            drain[f"first_done_s_{name}"] = round(med(f"first_done_s_{name}"), 3)
            for key in REDIS_COST_KEYS:
                drain[f"redis_{key}_{name}"] = round(med(f"redis_{key}_{name}"), 4)
        drain["ratio"] = round(drain["drain_single"] / drain["drain_bare"], 2)
        drain["bulk_ratio"] = round(drain["drain_bulk"] / drain["drain_bare"], 2)
        self.results["drain"] = drain
        self.results["scaling"] = scaling
        drain["scaling_jobs"] = m
        light, burst = extras["latency"]
        self.results["latency"] = {
            "light_jobs": len(light),
            "light_p50": percentile(light, 0.5),
            "light_p99": percentile(light, 0.99),
            "light_max": max(light) if light else 0,
            "burst_p50": percentile(burst, 0.5),
            "burst_p99": percentile(burst, 0.99),
        }
        self.results["memory"] = {
            "worker_idle_mb": idle["ours"],
            "bench_full_idle_mb": idle["bench_full"],
            "bare_idle_mb": idle["bare"],
            "idle_ratio": round(idle["ours"] / idle["bare"], 2),
            "worker_busy_mb": extras["busy_rss"],
            "store_mb_per_10k": round(store_mb, 2),
        }
        if peer_rounds:
            self.results["peers"] = merge_peer_rounds(peer_rounds)

    def peers_round(self, n: int) -> dict[str, Any]:
        """One round of every peer (bench/peers_run.py), each on a fresh Redis of its own."""
        from bench.peers_run import fresh_redis, measure_peers

        with fresh_redis() as factory:
            found = measure_peers(factory, n, self.quick, rounds=1, progress=lambda m: print(m, flush=True))
        self.sample_load()
        return found

    def start_latency(self, queue: Any, n: int) -> tuple[list[float], list[float]]:
        """(d) enqueue-to-start, ms: one job every 10 ms, then a burst of 2,000, on the running worker.

        Kept after they complete (remove_on_complete=False), so their times can be read.
        """
        light_jobs = 200 if self.quick else 1000
        light = []
        for _ in range(light_jobs):
            light.append(queue.add({}, remove_on_complete=False))
            time.sleep(LIGHT_INTERVAL_S)
        time.sleep(1)
        burst = [queue.add({}, remove_on_complete=False) for _ in range(2000)]
        deadline = time.monotonic() + 60
        total = n + light_jobs + 2000
        completed = f"{queue.name}:completed"
        while queue.store.metrics().get(completed, 0) < total and time.monotonic() < deadline:
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
                app = self.queue_emails(n, paused=True)
                with app.app_context():
                    # Booted with -Q email on the paused queue, then all let go at once by resume().
                    workers = [
                        self.worker("tasks", pool=pool, concurrency=concurrency, queues="email")
                        for _ in range(processes)
                    ]
                    store = app.extensions["jobs"].store
                    cpu_before = sum(cpu_seconds(w.pid) for w in workers)
                    started = time.perf_counter()
                    app.extensions["jobs"].queue("email").resume()
                    deadline = time.monotonic() + 300
                    while store.metrics().get("email:completed", 0) < n and time.monotonic() < deadline:
                        time.sleep(0.02)
                    elapsed = time.perf_counter() - started
                    completed = store.metrics().get("email:completed", 0)
                    cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
                    rss = round(sum(rss_mb(w.pid) for w in workers), 1)
                    for worker in workers:
                        self.retire(worker)
                app.extensions["db"].engine.dispose()
                self.sample_load()
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

    def queue_emails(self, n: int, paused: bool = False) -> Any:
        """A fresh app (schema migrated) with n email jobs waiting; the caller enters its context.

        paused: the email queue is paused first (workers booted on it take nothing until resume()).
        """
        from rideshare import create_app
        from rideshare.cli import upgrade_database
        from rideshare.jobs import add_email_job

        app = create_app()
        self.client_logs_to_file()
        with app.app_context():
            upgrade_database()
            if paused:
                app.extensions["jobs"].queue("email").pause()
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
        self.client_logs_to_file()
        with app.app_context():
            upgrade_database()
            token = issue_token("42", ttl_seconds=3600)
        port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:rideshare.gunicorn_conf", "rideshare:create_app()"]
        argv += ["--bind", f"127.0.0.1:{port}", "--workers", str(self.gunicorn[0])]
        argv += ["--threads", str(self.gunicorn[1]), "--no-control-socket", "--log-level", "warning"]
        with open(self.tmp / "gunicorn.log", "ab") as log:
            gunicorn = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=log)
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
        load("/payments", "POST", {"amount": "10.00", "paymentMethod": "pm_card_visa", "rideId": ride}, seconds=1)
        healthz = load("/healthz")
        welcome = load("/send-welcome-email", "POST", {"email": "a@example.com", "name": "Ann"})
        payment = load("/payments", "POST", {"amount": "10.00", "paymentMethod": "pm_card_visa", "rideId": ride})
        self.retire(gunicorn)
        app.extensions["db"].engine.dispose()
        self.sample_load()
        self.results["api"] = {
            "healthz": healthz,
            "welcome": welcome,
            "payment": payment,
            "gunicorn": list(self.gunicorn),
            "welcome_ratio": round(welcome["rps"] / healthz["rps"], 2),
            "payment_ratio": round(payment["rps"] / healthz["rps"], 2),
        }

    # py-spy -------------------------------------------------------------------------

    def profiles(self) -> None:
        """Where an email job's and a POST /payments' time goes, on this tree (bench/profile.py)."""
        from bench import profile

        seconds = 4 if self.quick else 10
        found = {}
        for workload in ("email", "payment"):
            self.redis.flushdb()
            try:
                result = profile.profile(self, workload, seconds)
            except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
                found[workload] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                continue
            result.pop("summary")
            result["tree"] = profile.describe_tree()
            found[workload] = result
        self.results["profiles"] = found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer jobs, one round, shorter runs")
    parser.add_argument("--rounds", type=int, default=None, help="drain rounds, ours and peers (default 3, quick 1)")
    parser.add_argument("--no-peers", action="store_true", help="skip stock Celery, Dramatiq and BullMQ")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    bench = Bench(args.quick, args.rounds)
    bench.peers = not args.no_peers
    began = time.monotonic()
    steps = ["drain", "io_bound", "api"] + ([] if args.no_profile else ["profiles"])
    try:
        for name in steps:
            print(f"[bench] {name} ...", flush=True)
            getattr(bench, name)()
            summary = {k: v for k, v in bench.results.items() if k not in ("peers", "profiles")}
            print(json.dumps(summary, indent=1), flush=True)
    finally:
        bench.close()
    bench.results["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    samples = bench.load_samples or [os.getloadavg()[0]]
    bench.results["load_average"]["during"] = [round(min(samples), 2), round(max(samples), 2)]
    bench.results["minutes"] = round((time.monotonic() - began) / 60, 1)
    from bench.report import write_report

    write_report(bench.results, args.out)
    print(f"[bench] wrote {args.out / 'benchmarks.md'} after {bench.results['minutes']} minutes")


if __name__ == "__main__":
    main()
