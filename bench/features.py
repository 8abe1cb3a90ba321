"""What job control and visibility cost per job, and how fast search is at 100,000 jobs.

    python -m bench.features [--jobs 20000] [--search-jobs 100000] [--rounds 3]

Run it alone on the machine (it reports the load average). On a Redis of its own:

1. **Store cost per job.** The whole life of N jobs through the engine's scripts, as a
   worker lives it (add, fetch in batches of 10, finish), with the store's features all
   off, then each one on alone, then all on (as shipped), then all on with one
   update_progress and one log line per job (what the payment task does per step). Each
   variant reports the Redis server's CPU per job (INFO's used_cpu_user + sys) and the
   client's wall time per job, and each is a ratio against the all-off run of the same
   round. The rounds interleave the variants, and each figure is the median of rounds.
2. **Tracing.** The same cycle through JobTask's span (jobqueue.tracing.job_span) with
   no SDK configured (off: the shipped default) and with the OpenTelemetry SDK and a
   span processor that drops spans (on), as a ratio of client CPU per job to no span.
3. **A worker's drain** (``--drain``): no-op jobs drained by one prefork worker (-c 2),
   as bench/run.py's (b), with the store's features off (JOB_EVENTS_MAXLEN=0,
   JOB_METRIC_BUCKETS=false, JOB_SEARCH_INDEX=false) and as shipped, alternating: the
   worker's CPU and the Redis server's CPU per job, and the drain rate, as ratios.
4. **Search latency.** 100,000 jobs over 10,000 rides (tags rideId, owner) in the
   payment queue, then JobStore.search for one ride, for one ride and state, for a
   state alone, and for an owner: p50 and p95 of 200 searches each, in ms.
"""

import argparse
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from devstack.processes import free_port, start_redis, stop
from jobqueue import EngineSettings, JobService, JobStore, QueuePolicy
from jobqueue.scripts import Features

POLICY = QueuePolicy(name="bench", task="bench.run", priorities=3)
VARIANTS: dict[str, Features] = {
    "all off": Features(events=0, buckets=False, indexes=False),
    "events only": Features(events=10_000, buckets=False, indexes=False),
    "buckets only": Features(events=0, buckets=True, indexes=False),
    "indexes only": Features(events=0, buckets=False, indexes=True),
    "all on (shipped)": Features(),
}


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def cycle(client: redis.Redis, features: Features, n: int, *, progress: bool = False, span: Any = None) -> dict:
    """n jobs through add, fetch (10 at a time) and finish; Redis CPU and client time per job (ms)."""
    store = JobStore(client, prefix=f"feat{random.randrange(10**9)}", features=features)
    queue = JobService.from_policies([POLICY], store, EngineSettings()).queue("bench")
    client.flushdb()
    cpu0, wall0, proc0 = redis_cpu(client), time.perf_counter(), time.process_time()
    for i in range(n):
        queue.add({"n": i}, owner=f"u{i % 500}", tags={"rideId": i % 2000})
    done = 0
    while done < n:
        _, jobs = store.fetch("bench", 10, "w1", max_stalls=1)
        for job in jobs:
            job.store = store
            with span(job) if span else contextlib.nullcontext():
                if progress:
                    job.update_progress({"step": "charging"})
                    job.log("charged: pi_123 succeeded")
                store.finish(job, "complete", score=int(time.time() * 1000), duration_ms=1.0, fields={"result": "1"})
        done += len(jobs)
    return {
        "redis_ms": (redis_cpu(client) - cpu0) * 1000 / n,
        "client_ms": (time.perf_counter() - wall0) * 1000 / n,
        "client_cpu_ms": (time.process_time() - proc0) * 1000 / n,
    }


def median_of(rounds: list[dict[str, dict]], name: str, key: str) -> float:
    return statistics.median(r[name][key] for r in rounds)


def store_costs(client: redis.Redis, n: int, rounds: int) -> dict[str, Any]:
    per_round = []
    for _ in range(rounds):
        found = {name: cycle(client, features, n) for name, features in VARIANTS.items()}
        found["all on + progress and a log line"] = cycle(client, Features(), n, progress=True)
        per_round.append(found)
    base_redis = median_of(per_round, "all off", "redis_ms")
    base_client = median_of(per_round, "all off", "client_ms")
    out = {}
    for name in per_round[0]:
        redis_ms, client_ms = median_of(per_round, name, "redis_ms"), median_of(per_round, name, "client_ms")
        out[name] = {
            "redis_cpu_ms_per_job": round(redis_ms, 4),
            "redis_cpu_ratio": round(redis_ms / base_redis, 3),
            "client_ms_per_job": round(client_ms, 4),
            "client_ratio": round(client_ms / base_client, 3),
        }
    return out


def tracing_costs(client: redis.Redis, n: int, rounds: int) -> dict[str, Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from jobqueue import tracing

    def span(job: Any) -> Any:
        return tracing.job_span(job, job.queue, job.attempts)

    plain, off, on = [], [], []
    for _ in range(rounds):
        plain.append(cycle(client, Features(), n)["client_cpu_ms"])
        off.append(cycle(client, Features(), n, span=span)["client_cpu_ms"])
    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())  # records spans, exports nothing
    trace.set_tracer_provider(provider)
    tracing.refresh()
    for _ in range(rounds):
        on.append(cycle(client, Features(), n, span=span)["client_cpu_ms"])
    base = statistics.median(plain)
    return {
        "no span: client CPU ms per job": round(base, 4),
        "tracing off (no SDK) ratio": round(statistics.median(off) / base, 3),
        "tracing on (SDK, spans dropped) ratio": round(statistics.median(on) / base, 3),
    }


def timed(fn: Callable[[], Any], times: int) -> dict[str, float]:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        spent.append((time.perf_counter() - start) * 1000)
    spent.sort()
    return {"p50_ms": round(spent[len(spent) // 2], 3), "p95_ms": round(spent[int(len(spent) * 0.95) - 1], 3)}


def search_latency(client: redis.Redis, jobs: int) -> dict[str, Any]:
    client.flushdb()
    store = JobStore(client, prefix="search")
    queue = JobService.from_policies([POLICY], store, EngineSettings()).queue("bench")
    rides = jobs // 10
    start = time.perf_counter()
    for first in range(0, jobs, 1000):
        batch = [{"n": i} for i in range(first, min(first + 1000, jobs))]
        with client.pipeline(transaction=False) as pipe:
            for data in batch:
                i = data["n"]
                job = queue.prepare(data, owner=f"u{i % 5000}", tags={"rideId": i % rides})
                queue._create(job, 0, client=pipe)
            pipe.execute()
    filled = time.perf_counter() - start
    # A third of them finished: fail some so a state filter has something to find.
    _, taken = store.fetch("bench", 3000, "w1", max_stalls=1)
    for job in taken:
        store.finish(job, "fail", score=int(time.time() * 1000), fields={"failedReason": "x"})
    ride = random.randrange(rides)
    return {
        "jobs": jobs,
        "fill_s": round(filled, 1),
        "used_memory_mb": round(client.info("memory")["used_memory"] / 2**20, 1),
        "one ride": timed(lambda: store.search("bench", tags=[f"rideId:{random.randrange(rides)}"]), 200),
        "one ride, failed": timed(lambda: store.search("bench", tags=[f"rideId:{ride}"], state="failed"), 200),
        "one owner, newest 50": timed(lambda: store.search("bench", tags=[f"owner:u{random.randrange(5000)}"]), 200),
        "failed, newest 50": timed(lambda: store.search("bench", state="failed"), 200),
        "everything, newest 50": timed(lambda: store.search("bench"), 200),
    }


DRAIN_MODES = {
    "all off": {"JOB_EVENTS_MAXLEN": "0", "JOB_METRIC_BUCKETS": "false", "JOB_SEARCH_INDEX": "false"},
    "shipped": {},
}


def drain_medians(
    jobs: int, rounds: int, modes: dict[str, tuple[dict[str, str], Callable[[Any], None] | None]]
) -> dict[str, dict[str, float]]:
    """No-op jobs drained by one prefork worker (-c 2) in each mode, rounds alternating the order:
    the medians of the worker's CPU and the Redis server's CPU per job (ms) and the drain rate.
    A mode is (the worker's extra environment, a setup of the queue before its jobs are added)."""
    from bench.run import Bench

    bench = Bench(quick=True)  # first: it sets the environment bench.full's app is built from
    from bench.full import QUEUE, flask_app, noop_queue
    from rideshare.cli import upgrade_database

    found: dict[str, dict[str, list[float]]] = {m: {"worker": [], "redis": [], "rate": []} for m in modes}
    try:
        bench.client_logs_to_file()
        with flask_app.app_context():
            upgrade_database()
            queue = noop_queue()

            def done() -> int:
                return queue.store.metrics().get(f"{QUEUE}:completed", 0)

            for index in range(rounds):
                for mode in list(modes) if index % 2 == 0 else list(modes)[::-1]:
                    env, setup = modes[mode]
                    bench.redis.flushdb()
                    if setup is not None:
                        setup(queue)
                    queue.pause()
                    for _ in range(jobs):
                        queue.add({})
                    before = redis_cpu(bench.redis)
                    drained = bench.timed_drain("bench.full", done, jobs, env=env)
                    found[mode]["redis"].append((redis_cpu(bench.redis) - before) * 1000 / jobs)
                    found[mode]["worker"].append(drained["cpu_ms"])
                    found[mode]["rate"].append(drained["rate"])
                    for proc in drained["procs"]:
                        bench.retire(proc)
                    print(f"[bench] drain round {index + 1} {mode}: {drained['cpu_ms']:.3f} ms", flush=True)
    finally:
        bench.close()
    return {m: {k: statistics.median(v) for k, v in parts.items()} for m, parts in found.items()}


def drain_report(jobs: int, med: dict[str, dict[str, float]], base: str, other: str, tag: str) -> dict[str, Any]:
    """drain_medians' figures, and other's as ratios over base (keys '..._ratio_<tag>')."""
    return {
        "jobs": jobs,
        "pool": "prefork -c 2",
        "worker_cpu_ms_per_job": {m: round(v["worker"], 3) for m, v in med.items()},
        "redis_cpu_ms_per_job": {m: round(v["redis"], 4) for m, v in med.items()},
        "rate_jobs_per_s": {m: round(v["rate"], 1) for m, v in med.items()},
        f"worker_cpu_ratio_{tag}": round(med[other]["worker"] / med[base]["worker"], 3),
        f"redis_cpu_ratio_{tag}": round(med[other]["redis"] / med[base]["redis"], 3),
        f"rate_ratio_{tag}": round(med[other]["rate"] / med[base]["rate"], 3),
    }


def drain_costs(jobs: int, rounds: int) -> dict[str, Any]:
    """The worker-level cost of the store's features: see the module's docstring (3)."""
    med = drain_medians(jobs, rounds, {mode: (env, None) for mode, env in DRAIN_MODES.items()})
    return drain_report(jobs, med, "all off", "shipped", "shipped_over_off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--search-jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="docs/features-bench.json")
    parser.add_argument("--drain", type=int, default=0, help="no-op jobs per worker drain (0: skip it)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="features-bench-"))
    port = free_port()
    proc = start_redis(tmp / "redis", port)
    try:
        client = redis.Redis(port=port, decode_responses=True)
        results = {
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
            "jobs_per_variant": args.jobs,
            "rounds": args.rounds,
            "store": store_costs(client, args.jobs, args.rounds),
            "tracing": tracing_costs(client, args.jobs // 2, args.rounds),
            "search": search_latency(client, args.search_jobs),
            "drain": drain_costs(args.drain, args.rounds) if args.drain else None,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        stop(proc)
    text = json.dumps(results, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
