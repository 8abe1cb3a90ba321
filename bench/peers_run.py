"""The peers, measured in the same sitting as the service: stock Celery, Dramatiq and BullMQ.

    python -m bench.peers_run [--quick] [--jobs N] [--json out.json]

starts a Redis of its own on a free loopback port and prints a markdown table. From the
bench: `measure_peers(redis_url_factory, jobs, quick)` returns the figures and
`markdown_table(results)` renders them. Every peer runs a no-op job whose only work is
an INCR on `bench.peers.COUNTER` in the same Redis; the bench polls that counter
(every 5 ms), so "done" means the same thing for all of them: the job's code has run.

What each peer is (all on one Redis, one queue, an empty payload):

- stock Celery (bench/peers/stock_celery.py): the service's celeryconfig, kombu's own Redis
  transport with its default options, `acks_late=True`, INFO log level as bench/run.py's
  workers. Enqueue: `noop.apply_async(queue="analytics")` per job. Drains:
  (a) one worker, prefork -c 2, prefetch multiplier 4; (b) two solo workers, prefetch 4.
  Idle RSS: the prefork -c 2 worker (main process + its children) 2 s after it is ready,
  in the first round only.
  The fill is timed once per round; drain (b) gets the same messages back from a
  DUMP/RESTORE of the filled database, which saves a second fill of the slowest peer.
- Dramatiq (bench/peers/dramatiq_app.py): RedisBroker, default middleware, Dramatiq's CLI
  with 2 processes x 8 threads. Enqueue: `noop.send()` per job; batch: `group([...]).run()`
  per 1,000 jobs (Dramatiq has no bulk enqueue; its Redis broker still makes one call
  per message, so the two figures should be close).
- BullMQ (bench/peers/bullmq/, node): one worker process, concurrency 50, default job
  options (completed jobs kept). Enqueue: `await queue.add()` one at a time; batch:
  `queue.addBulk()` per 1,000 jobs. Skipped, with the reason, when `node` is not on PATH
  or `npm ci` fails; installed with `npm ci` from the committed package-lock.json the
  first time.

What is timed, the same way for every peer:

- Enqueue: jobs/s from one process, from just before its first job to just after its
  last, after it has connected (interpreter start and imports are not counted).
- Drain: the N jobs are queued first; then the workers are started and left to boot and
  connect without consuming; the clock starts at the command that lets them all consume
  at once and stops when the counter reaches N. Nothing is subtracted; boot time is not
  in it, the first fetch round trips are. For Celery the workers boot on the idle
  `email` queue and are told to consume `analytics` in one `add_consumer` broadcast
  (as bench/run.py times bare Celery; it lets the service's workers go by resuming their
  paused queue); Dramatiq and BullMQ workers count themselves on
  `READY` once connected and block (Dramatiq in its `before_worker_boot` hook, before
  any consumer starts; BullMQ with `autorun: false`) until the bench pushes one token
  per process onto `GATE`.
  `first_done_s` is the part of the window before the first job was done, kept to show
  that fixed cost (it is in the rate, not taken off it). For Celery it is up to ~1 s:
  a worker's BRPOP on `email` runs out (kombu's 1 s timeout) before it asks for
  `analytics` too, which is the same for bench/run.py's bare Celery; the service's
  workers, woken by the resume, have no such wait (bench/run.py keeps their
  first_done_s too). On 3,000 jobs that second is a large share of the window; read
  quick runs with that in mind.
- Each figure is the median over `rounds` (3, or 1 with quick) of a fresh fill and drain;
  the database is flushed before every fill. Per-round figures are kept under "rounds".

Time: 20,000 jobs x 3 rounds took 6 minutes on a 2-core machine shared with other test
suites (load average 8), three quarters of it stock Celery (about 85 s a round: its fill
at ~1,000 jobs/s, then the prefork drain at ~500 jobs/s); Dramatiq took 60 s and BullMQ
30 s. Fewer `rounds` or `jobs` shorten it in proportion.
"""

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from bench.peers import COUNTER, GATE, READY
from bench.procs import process_tree, rss_mb
from devstack.processes import free_port, start_celery_worker, start_redis, stop

ROOT = Path(__file__).resolve().parent.parent
BULLMQ_DIR = ROOT / "bench" / "peers" / "bullmq"
PREFETCH = 4  # the analytics worker's shipped prefetch, as bench/run.py's drain uses
DRAMATIQ_PROCESSES, DRAMATIQ_THREADS = 2, 8
BULLMQ_CONCURRENCY = 50
BATCH = 1000  # group / addBulk size
PEERS = ("celery", "dramatiq", "bullmq")


def _stop_tree(proc: subprocess.Popen) -> None:
    """Stop a process we started (SIGTERM, then SIGKILL), then any of its descendants left behind."""
    below = process_tree(proc.pid)[1:]
    stop(proc)
    for pid in below:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _median(values: list[float]) -> int:
    return round(statistics.median(values))


@contextlib.contextmanager
def fresh_redis() -> Iterator[Callable[[], str]]:
    """A redis-server of our own on a free 127.0.0.1 port; yields a factory of its URL. Stopped on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="rideshare-peers-redis-"))
    port = free_port()
    proc = start_redis(tmp / "redis", port)
    try:
        yield lambda: f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


class _Sitting:
    """One peer's measurements against one Redis URL: the processes it starts, its logs."""

    def __init__(self, url: str, tmp: Path, jobs: int) -> None:
        self.url = url
        self.tmp = tmp
        self.jobs = jobs
        self.redis = redis.Redis.from_url(url)
        self.env = {**os.environ, "REDIS_URL": url}
        self.env.pop("BENCH_GATE", None)
        self.procs: list[subprocess.Popen] = []
        self.deadline_s = max(60.0, jobs / 100)  # a drain slower than 100 jobs/s is a failure

    def close(self) -> None:
        for proc in self.procs:
            _stop_tree(proc)
        self.procs.clear()
        self.redis.close()

    def retire(self, proc: subprocess.Popen) -> None:
        _stop_tree(proc)
        self.procs.remove(proc)

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}-{secrets.token_hex(3)}.log"

    def run_json(self, argv: list[str], cwd: Path, timeout: float) -> dict:
        done = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def enqueue_py(self, peer: str, mode: str = "single") -> float:
        """Flush, then fill the queue from one Python process; jobs/s."""
        self.redis.flushdb()
        argv = [sys.executable, "-m", "bench.peers.enqueue", peer, "--jobs", str(self.jobs), "--mode", mode]
        argv += ["--chunk", str(BATCH)]
        return self.run_json(argv, ROOT, self.deadline_s)["rate"]

    def snapshot(self) -> dict[bytes, bytes]:
        """Every key in the database, DUMPed: the queue as a fill left it."""
        return {key: self.redis.dump(key) for key in self.redis.scan_iter(count=1000)}

    def restore(self, snapshot: dict[bytes, bytes]) -> None:
        """Flush, then put back a snapshot's keys: byte-for-byte the same queued messages."""
        self.redis.flushdb()
        pipe = self.redis.pipeline(transaction=False)
        for key, value in snapshot.items():
            pipe.restore(key, 0, value, replace=True)
        pipe.execute()

    def enqueue_node(self, mode: str) -> float:
        self.redis.flushdb()
        argv = ["node", "enqueue.js", mode, str(self.jobs), str(BATCH)]
        return self.run_json(argv, BULLMQ_DIR, self.deadline_s)["rate"]

    def wait_for(self, key: str, n: int, timeout: float, procs: list[subprocess.Popen], logs: list[Path]) -> float:
        """Poll key until it reaches n; fail if a worker exits or time runs out.

        Returns the perf_counter() at which key was first seen above 0.
        """
        deadline = time.monotonic() + timeout
        first = None
        while (count := int(self.redis.get(key) or 0)) < n:
            if count and first is None:
                first = time.perf_counter()
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs if log.exists())
                why = f"a worker exited ({dead[0].returncode})" if dead else f"not reached after {timeout:.0f} s"
                raise RuntimeError(f"{key} at {count} of {n}: {why}\n{tails}")
            time.sleep(0.005)
        return first or time.perf_counter()

    def gated_drain(self, procs: list[subprocess.Popen], logs: list[Path], tokens: int) -> tuple[float, float]:
        """Wait until `tokens` worker processes are connected and holding, open the gate, time the drain.

        Returns (jobs/s, seconds from the gate opening to the first job done).
        """
        self.wait_for(READY, tokens, 60, procs, logs)
        started = time.perf_counter()
        self.redis.rpush(GATE, *["go"] * tokens)
        first = self.wait_for(COUNTER, self.jobs, self.deadline_s, procs, logs)
        return self.jobs / (time.perf_counter() - started), first - started


# Stock Celery ---------------------------------------------------------------------------


def _celery_round(s: _Sitting, control: Any, measure_rss: bool) -> dict[str, float]:
    def workers(pool: str, concurrency: int, count: int) -> tuple[list[subprocess.Popen], list[Path]]:
        """count workers booted side by side on the idle email queue, returned once all are ready."""
        logs = [s.log(f"celery-{pool}") for _ in range(count)]

        def boot(log: Path) -> subprocess.Popen:
            name = f"peer-{secrets.token_hex(3)}@%h"
            proc = start_celery_worker(
                {"REDIS_URL": s.url, "CELERY_PREFETCH_MULTIPLIER": str(PREFETCH)},
                log,
                app="bench.peers.stock_celery",
                queues="email",
                concurrency=concurrency,
                pool=pool,
                name=name,
                cwd=ROOT,
            )
            proc.node = name.replace("%h", platform.node())  # type: ignore[attr-defined]
            s.procs.append(proc)
            return proc

        with ThreadPoolExecutor(count) as pool_:
            procs = list(pool_.map(boot, logs))
        return procs, logs

    def drain(procs: list[subprocess.Popen], logs: list[Path]) -> float:
        nodes = [p.node for p in procs]  # type: ignore[attr-defined]
        started = time.perf_counter()
        replies = control.control.add_consumer("analytics", destination=nodes, reply=True, timeout=10)
        if len(replies) != len(nodes):
            raise RuntimeError(f"add_consumer answered by {len(replies)} of {len(nodes)} workers: {replies}")
        first = s.wait_for(COUNTER, s.jobs, s.deadline_s, procs, logs)
        rate = s.jobs / (time.perf_counter() - started)
        for proc in procs:
            s.retire(proc)
        return rate, first - started

    row = {"enqueue": s.enqueue_py("celery")}
    filled = s.snapshot()
    procs, logs = workers("prefork", 2, 1)
    if measure_rss:
        time.sleep(2)
        row["idle_rss_mb"] = rss_mb(procs[0].pid)
    row["drain_prefork_c2"], row["first_done_s_prefork_c2"] = drain(procs, logs)
    s.restore(filled)  # the same N messages again, without a second 20-second fill
    row["drain_solo_x2"], row["first_done_s_solo_x2"] = drain(*workers("solo", 1, 2))
    return row


def measure_celery(s: _Sitting, rounds: int) -> dict[str, Any]:
    import celery
    import kombu
    from celery import Celery

    control = Celery("peers-control")
    control.config_from_object("celeryconfig")
    control.conf.broker_url = s.url
    control.conf.imports = ()
    try:
        per_round = [_celery_round(s, control, measure_rss=i == 0) for i in range(rounds)]
    finally:
        control.close()
    return {
        "version": f"celery {celery.__version__}, kombu {kombu.__version__}",
        "settings": f"acks_late, celeryconfig, kombu's Redis transport, prefetch multiplier {PREFETCH}",
        "enqueue": _median([r["enqueue"] for r in per_round]),
        "drain_prefork_c2": _median([r["drain_prefork_c2"] for r in per_round]),
        "drain_solo_x2": _median([r["drain_solo_x2"] for r in per_round]),
        "idle_rss_mb": per_round[0]["idle_rss_mb"],
        "first_done_s_prefork_c2": round(statistics.median(r["first_done_s_prefork_c2"] for r in per_round), 3),
        "first_done_s_solo_x2": round(statistics.median(r["first_done_s_solo_x2"] for r in per_round), 3),
        "rounds": [{k: round(v, 3 if k.startswith("first") else 1) for k, v in r.items()} for r in per_round],
    }


# Dramatiq --------------------------------------------------------------------------------


def _dramatiq_round(s: _Sitting) -> dict[str, float]:
    row = {"enqueue_group": s.enqueue_py("dramatiq", "group"), "enqueue": s.enqueue_py("dramatiq")}
    log = s.log("dramatiq")
    argv = [sys.executable, "-m", "dramatiq", "bench.peers.dramatiq_app"]
    argv += ["-p", str(DRAMATIQ_PROCESSES), "-t", str(DRAMATIQ_THREADS), "-Q", "bench"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env={**s.env, "BENCH_GATE": "1"}, stdout=out, stderr=subprocess.STDOUT)
    s.procs.append(proc)
    row["drain"], row["first_done_s"] = s.gated_drain([proc], [log], DRAMATIQ_PROCESSES)
    row["rss_after_drain_mb"] = rss_mb(proc.pid)
    s.retire(proc)
    return row


def measure_dramatiq(s: _Sitting, rounds: int) -> dict[str, Any]:
    per_round = [_dramatiq_round(s) for _ in range(rounds)]
    return {
        "version": f"dramatiq {importlib.metadata.version('dramatiq')}",
        "settings": f"RedisBroker, default middleware, CLI -p {DRAMATIQ_PROCESSES} -t {DRAMATIQ_THREADS}",
        "enqueue": _median([r["enqueue"] for r in per_round]),
        "enqueue_group": _median([r["enqueue_group"] for r in per_round]),
        "drain": _median([r["drain"] for r in per_round]),
        "rss_after_drain_mb": round(statistics.median(r["rss_after_drain_mb"] for r in per_round), 1),
        "first_done_s": round(statistics.median(r["first_done_s"] for r in per_round), 3),
        "rounds": [{k: round(v, 3 if k.startswith("first") else 1) for k, v in r.items()} for r in per_round],
    }


# BullMQ ------------------------------------------------------------------------------------


def bullmq_ready() -> str | None:
    """None when BullMQ can run here (installing it with `npm ci` if needed), else why not."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (BULLMQ_DIR / "node_modules" / "bullmq" / "package.json").exists():
        if shutil.which("npm") is None:
            return "npm is not on PATH"
        try:
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=BULLMQ_DIR,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            return "npm ci took more than 300 s"
        if done.returncode != 0:
            return f"npm ci failed: {done.stderr.strip()[-500:]}"
    return None


def _bullmq_round(s: _Sitting) -> dict[str, float]:
    row = {"enqueue_bulk": s.enqueue_node("bulk"), "enqueue": s.enqueue_node("add")}
    log = s.log("bullmq")
    env = {**s.env, "BENCH_CONCURRENCY": str(BULLMQ_CONCURRENCY), "BENCH_COUNTER": COUNTER}
    env.update({"BENCH_READY": READY, "BENCH_GATE_KEY": GATE})
    with open(log, "ab") as out:
        proc = subprocess.Popen(["node", "worker.js"], cwd=BULLMQ_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
    s.procs.append(proc)
    row["drain"], row["first_done_s"] = s.gated_drain([proc], [log], 1)
    row["rss_after_drain_mb"] = rss_mb(proc.pid)
    s.retire(proc)
    return row


def measure_bullmq(s: _Sitting, rounds: int) -> dict[str, Any]:
    per_round = [_bullmq_round(s) for _ in range(rounds)]
    version = json.loads((BULLMQ_DIR / "node_modules" / "bullmq" / "package.json").read_text())["version"]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return {
        "version": f"bullmq {version}, node {node}",
        "settings": f"1 worker process, concurrency {BULLMQ_CONCURRENCY}, default job options",
        "enqueue": _median([r["enqueue"] for r in per_round]),
        "enqueue_bulk": _median([r["enqueue_bulk"] for r in per_round]),
        "drain": _median([r["drain"] for r in per_round]),
        "rss_after_drain_mb": round(statistics.median(r["rss_after_drain_mb"] for r in per_round), 1),
        "first_done_s": round(statistics.median(r["first_done_s"] for r in per_round), 3),
        "rounds": [{k: round(v, 3 if k.startswith("first") else 1) for k, v in r.items()} for r in per_round],
    }


# The API -----------------------------------------------------------------------------------


def measure_peers(
    redis_url_factory: Callable[[], str],
    jobs: int = 20000,
    quick: bool = False,
    *,
    rounds: int | None = None,
    peers: tuple[str, ...] = PEERS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure each peer; returns {"jobs", "rounds", "celery": {...}, "dramatiq": {...}, "bullmq": {...}}.

    redis_url_factory() is called once per peer and must give the URL of a Redis database
    this function may flush (FLUSHDB before every fill). A peer that cannot run here (no
    node, Dramatiq not installed) is {"skipped": reason}; one that fails mid-way is
    {"error": message}, and the others still run. Rates are jobs/s, medians over rounds
    (3, or 1 when quick); each peer's per-round figures are under its "rounds".
    """
    say = progress or (lambda _msg: None)
    rounds = rounds or (1 if quick else 3)
    results: dict[str, Any] = {"jobs": jobs, "rounds": rounds}
    tmp = Path(tempfile.mkdtemp(prefix="rideshare-peers-"))
    results["logs"] = str(tmp)
    for peer in peers:
        skipped = None
        if peer == "dramatiq" and importlib.util.find_spec("dramatiq") is None:
            skipped = "dramatiq is not installed (pip install -e '.[bench]')"
        elif peer == "bullmq":
            skipped = bullmq_ready()
        if skipped:
            results[peer] = {"skipped": skipped}
            say(f"[peers] {peer}: skipped ({skipped})")
            continue
        say(f"[peers] {peer}: {rounds} round(s) of {jobs:,} jobs ...")
        began = time.monotonic()
        sitting = _Sitting(redis_url_factory(), tmp, jobs)
        try:
            measure = {"celery": measure_celery, "dramatiq": measure_dramatiq, "bullmq": measure_bullmq}[peer]
            results[peer] = measure(sitting, rounds)
        except Exception as exc:  # noqa: BLE001 - one peer failing must not cost the others
            results[peer] = {"error": f"{type(exc).__name__}: {exc}"[:4000]}
        finally:
            with contextlib.suppress(Exception):
                sitting.redis.flushdb()
            sitting.close()
        results[peer]["seconds"] = round(time.monotonic() - began, 1)
        say(f"[peers] {peer}: {json.dumps({k: v for k, v in results[peer].items() if k != 'rounds'})}")
    return results


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int | float) else str(value)


def markdown_table(results: dict[str, Any]) -> str:
    """The peers' figures as a markdown table (jobs/s; a skipped or failed peer gets one row saying so)."""
    lines = [
        f"Peers, {results['jobs']:,} no-op jobs, median of {results['rounds']} round(s), same Redis and sitting.",
        "",
        "| peer | workers | enqueue, one call per job | batch enqueue | drain, jobs/s | worker RSS MB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    celery, dramatiq, bullmq = (results.get(p, {"skipped": "not measured"}) for p in PEERS)

    def missing(name: str, row: dict) -> bool:
        if "skipped" in row or "error" in row:
            lines.append(f"| {name} | {row.get('skipped') or row.get('error', '')[:200]} | | | | |")
            return True
        return False

    if not missing("stock Celery", celery):
        name = f"stock Celery, acks_late ({celery['version']})"
        lines.append(
            f"| {name} | 1 x prefork -c 2, prefetch {PREFETCH} | `apply_async` {_n(celery['enqueue'])} | none"
            f" | {_n(celery['drain_prefork_c2'])} | {celery['idle_rss_mb']} idle (main + 2 children) |"
        )
        lines.append(f"| {name} | 2 x solo, prefetch {PREFETCH} | | | {_n(celery['drain_solo_x2'])} | |")
    if not missing("Dramatiq", dramatiq):
        lines.append(
            f"| Dramatiq ({dramatiq['version']}) | {DRAMATIQ_PROCESSES} processes x {DRAMATIQ_THREADS} threads"
            f" | `send` {_n(dramatiq['enqueue'])} | `group` of {BATCH:,} {_n(dramatiq['enqueue_group'])}"
            f" | {_n(dramatiq['drain'])} | {dramatiq['rss_after_drain_mb']} after the drain |"
        )
    if not missing("BullMQ", bullmq):
        lines.append(
            f"| BullMQ ({bullmq['version']}) | 1 process, concurrency {BULLMQ_CONCURRENCY}"
            f" | `add` {_n(bullmq['enqueue'])} | `addBulk` of {BATCH:,} {_n(bullmq['enqueue_bulk'])}"
            f" | {_n(bullmq['drain'])} | {bullmq['rss_after_drain_mb']} after the drain |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round (and 3,000 jobs unless --jobs)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per fill (default 20,000; 3,000 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per peer (default 3; 1 with --quick)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    jobs = args.jobs or (3000 if args.quick else 20000)
    peers = tuple(p for p in args.peers.split(",") if p)
    with fresh_redis() as factory:
        results = measure_peers(
            factory,
            jobs,
            args.quick,
            rounds=args.rounds,
            peers=peers,
            progress=lambda m: print(m, file=sys.stderr, flush=True),
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(markdown_table(results))


if __name__ == "__main__":
    main()
