"""What flow control costs per job: limit checks, groups and deduplication, against the same queue without.

    python -m bench.limits [--jobs 20000] [--rounds 3] [--drain 3000]

Run it alone on the machine (it reports the load average). On a Redis of its own:

1. **Store cost per job.** The whole life of N jobs through the engine's scripts, as a
   worker lives it (add, fetch in batches of 10, finish), on a queue with no limits,
   then with limits that never bind (so what is measured is the checking, not waiting):
   a rate of 1,000,000 per second and a concurrency of 100,000; then every job in one of
   1,000 groups; then every job with a deduplication key of its own (mode simple); then
   all of them. Each variant reports the Redis server's CPU per job (INFO's
   used_cpu_user + sys) and the client's wall time per job, as a ratio against the
   no-limits run of the same round. Rounds interleave the variants; each figure is the
   median of rounds.
2. **A worker's drain** (``--drain``): no-op jobs drained by one prefork worker (-c 2), as
   bench/run.py's (b), with no limits and with the limits above (not binding),
   alternating: the worker's CPU, the Redis server's CPU per job and the drain rate, as
   ratios.
"""

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.features import drain_medians, drain_report, median_of, redis_cpu
from devstack.processes import free_port, start_redis, stop
from jobqueue import EngineSettings, JobService, JobStore, Limits, QueuePolicy, Rate

POLICY = QueuePolicy(name="bench", task="bench.run", priorities=3)
LOOSE = Limits(rate=Rate(1_000_000, 1000), concurrency=100_000)
GROUPS = 1000


def _none(i: int) -> dict[str, Any]:
    return {}


def _group(i: int) -> dict[str, Any]:
    return {"group": f"ride:{i % GROUPS}"}


def _dedup(i: int) -> dict[str, Any]:
    return {"deduplicate": {"id": f"k{i}", "mode": "simple"}}


def _all(i: int) -> dict[str, Any]:
    return {**_group(i), **_dedup(i)}


VARIANTS: dict[str, tuple[Limits | None, Callable[[int], dict[str, Any]]]] = {
    "no limits": (None, _none),
    "rate + concurrency (not binding)": (LOOSE, _none),
    f"groups ({GROUPS}, one at a time)": (None, _group),
    "deduplication (simple, a key per job)": (None, _dedup),
    "all of them": (LOOSE, _all),
}


def cycle(client: redis.Redis, limits: Limits | None, options: Callable[[int], dict[str, Any]], n: int) -> dict:
    """n jobs through add, fetch (10 at a time) and finish; Redis CPU and client time per job (ms)."""
    store = JobStore(client, prefix=f"lim{random.randrange(10**9)}")
    queue = JobService.from_policies([POLICY], store, EngineSettings()).queue("bench")
    client.flushdb()
    if limits:
        queue.flow.set(limits)
    cpu0, wall0 = redis_cpu(client), time.perf_counter()
    for i in range(n):
        queue.add({"n": i}, **options(i))
    done = 0
    while done < n:
        _, jobs = store.fetch("bench", 10, "w1", max_stalls=1)
        for job in jobs:
            store.finish(job, "complete", score=int(time.time() * 1000), duration_ms=1.0, fields={"result": "1"})
        done += len(jobs)
        if not jobs:
            raise RuntimeError(f"the fetch took nothing with {n - done} jobs left: a limit binds")
    return {
        "redis_ms": (redis_cpu(client) - cpu0) * 1000 / n,
        "client_ms": (time.perf_counter() - wall0) * 1000 / n,
    }


def store_costs(client: redis.Redis, n: int, rounds: int) -> dict[str, Any]:
    per_round = []
    for index in range(rounds):
        names = list(VARIANTS) if index % 2 == 0 else list(VARIANTS)[::-1]
        per_round.append({name: cycle(client, *VARIANTS[name], n) for name in names})
    base_redis = median_of(per_round, "no limits", "redis_ms")
    base_client = median_of(per_round, "no limits", "client_ms")
    out = {}
    for name in VARIANTS:
        redis_ms, client_ms = median_of(per_round, name, "redis_ms"), median_of(per_round, name, "client_ms")
        out[name] = {
            "redis_cpu_ms_per_job": round(redis_ms, 4),
            "redis_cpu_ratio": round(redis_ms / base_redis, 3),
            "client_ms_per_job": round(client_ms, 4),
            "client_ratio": round(client_ms / base_client, 3),
        }
    return out


def drain_costs(jobs: int, rounds: int) -> dict[str, Any]:
    """The worker-level cost of the limit checks: see the module's docstring (2)."""
    modes = {"no limits": ({}, None), "limits (not binding)": ({}, lambda queue: queue.flow.set(LOOSE))}
    med = drain_medians(jobs, rounds, modes)
    return drain_report(jobs, med, "no limits", "limits (not binding)", "limits_over_none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="docs/limits-bench.json")
    parser.add_argument("--drain", type=int, default=0, help="no-op jobs per worker drain (0: skip it)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="limits-bench-"))
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
