"""Where the time goes: py-spy samples a real worker, or the API's gunicorn workers, under load.

    .venv/bin/python -m bench.profile noop     # CPU-light no-op jobs, one solo worker
    .venv/bin/python -m bench.profile email    # email jobs, SMTP answering after 100 ms, threads x32
    .venv/bin/python -m bench.profile payment  # POST /payments, gunicorn 2 x 8 threads, wrk -c16
    .venv/bin/python -m bench.profile email payment --json bench/profiles.json --label after
    .venv/bin/python -m bench.profile email payment --before 054001c --json bench/profiles.json

(installed by `bash scripts/run-bench.sh`, which pins py-spy in the bench extra.)
Prints the samples grouped by what they are doing (GROUPS: the job store's fetch, Celery's
strategy/request/trace, Celery's events, kombu's consumer for the broker, SQLAlchemy,
MIME building, the job-store scripts, logging, Flask/smorest, publishing...)
and the functions with the most samples, and keeps py-spy's raw file (collapsed stacks,
for a flame graph) under the run's temporary folder. `--json FILE --label L` also stores
the grouped figures in FILE under L (bench/report.py renders bench/profiles.json as
"Where the time goes", before vs after).

`--before COMMIT` profiles an older tree with this same file: it checks COMMIT out with
`git worktree add` in a temporary folder, copies this file over that tree's
bench/profile.py, runs it there (cwd and PYTHONPATH the old tree, this .venv), stores
the figures under the label "before" and removes the worktree. The old tree needs a
bench/run.py with Bench (worker, queue_emails, tmp, env, smtp_port, procs, close), which
054001c, the commit before the engine rework, has.

Every mode runs with the shipped INFO log level. py-spy samples only the thread holding
the GIL (--gil), so the shares are of the Python CPU time: threads waiting on SMTP, SQL
or a queue are left out (py-spy's own idle detection misses some of those, such as a
thread pool's worker blocked on its queue, which would otherwise count). The figures per
job or request are the profiled processes' CPU time (user + system) over the jobs or
requests done while py-spy sampled them, so they include py-spy's own overhead on them.
"""

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SMTP_LATENCY_S = 0.1
RATE_HZ = 200

# What a sample is doing: the first frame from the leaf up that matches a rule names its
# group. Frames of redis-py and kombu's transports are transparent (they belong to
# whoever called them: the consumer's BRPOP, a job-store script, a publish).
TRANSPARENT = ("/redis/", "/hiredis", "kombu/transport/", "/json/", "kombu/utils/json.py")
# The worker's side of the engine (jobqueue/worker.py): the fetcher thread (store.fetch,
# the wake BLPOP, reading the fetched records), the Celery message it builds per job and
# its hand-over to the event loop, and the slot accounting when a job ends.
FETCH = "job store fetch (jobqueue/worker.py, store.fetch)"
# Celery's own per-task path, whoever feeds it: the task strategy (request built, task
# reserved), the request, the tracer around the task, and the pool.
STRATEGY = "Celery strategy, request, trace and pool"
# A worker's own Celery events: task-received/started/succeeded (Flower) and heartbeats.
EVENTS = "Celery events (task events, heartbeats)"
# The rest of Celery and kombu in a worker: the event loop, the kombu consumer for the
# broker queues of -Q (BRPOP), remote control, timers.
KOMBU = "kombu consumer for the broker (event loop, BRPOP, remote control)"
# Marks a Celery, kombu, billiard or vine frame: celery_part() says which of the three above.
CELERY_FAMILY = "Celery/kombu"
RULES: list[tuple[str, str, tuple[str, ...] | None]] = [
    # (group, path substring, function names or None for any; a name ending in "." matches a class's methods)
    ("logging", "/logging/", None),
    ("logging", "rideshare/logs.py", None),
    ("logging", "celery/utils/log.py", None),
    ("MIME building", "/email/", None),
    ("SMTP (smtplib; waiting on the server)", "/smtplib.py", None),
    ("SQLAlchemy + psycopg", "sqlalchemy/", None),
    ("SQLAlchemy + psycopg", "/psycopg", None),
    (FETCH, "jobqueue/store.py", ("fetch", "wait_for_work")),
    (FETCH, "jobqueue/worker.py", ("Fetcher.", "_Ending.")),
    ("job-store scripts", "rideshare/jobs/store.py", None),
    ("job-store scripts", "jobqueue/store.py", None),
    ("publishing", "celery/app/base.py", ("send_task",)),
    ("publishing", "celery/app/amqp.py", None),
    ("publishing", "celery/app/task.py", ("apply_async", "delay")),
    ("publishing", "celery/events/", None),
    ("publishing", "kombu/messaging.py", ("publish", "_publish")),
    ("publishing", "kombu/connection.py", ("ensure", "_ensured", "default_channel")),
    # Trees before the engine rework (bench/profiles.json's "before", --before 054001c).
    ("publishing", "rideshare/jobs/queue.py", ("_send", "publish", "publish_many", "_publish")),
    ("auth (JWT decode)", "/jwt/", None),
    ("marshmallow", "marshmallow/", None),
    ("marshmallow", "webargs/", None),
    ("Flask/smorest", "flask/", None),
    ("Flask/smorest", "flask_smorest/", None),
    ("Flask/smorest", "werkzeug/", None),
    ("Flask/smorest", "flask_limiter/", None),
    ("Flask/smorest", "/limits/", None),
    ("gunicorn", "gunicorn/", None),
    (CELERY_FAMILY, "celery/", None),
    (CELERY_FAMILY, "kombu/", None),
    (CELERY_FAMILY, "billiard/", None),
    (CELERY_FAMILY, "vine/", None),
    # The 054001c tree's kombu transport (its messages and claims).
    (CELERY_FAMILY, "rideshare/jobs/transport.py", None),
    ("app and engine code (own frames)", "rideshare/", None),
    ("app and engine code (own frames)", "jobqueue/", None),
    ("app and engine code (own frames)", "tasks/", None),
]
# Which part of Celery a Celery-family sample belongs to: the nearest of these frames from
# it up to the root; none of them: KOMBU.
CELERY_PARTS: list[tuple[str, str, tuple[str, ...] | None]] = [
    (FETCH, "jobqueue/worker.py", ("Fetcher.", "_Ending.")),
    (STRATEGY, "celery/worker/strategy.py", None),
    (STRATEGY, "celery/worker/request.py", None),
    (STRATEGY, "celery/app/trace.py", None),
    (STRATEGY, "celery/concurrency/", None),
    (STRATEGY, "billiard/", None),
    (STRATEGY, "jobqueue/task.py", None),
    (EVENTS, "celery/events/", None),
    (EVENTS, "celery/worker/heartbeat.py", None),
]
OTHER = "other (stdlib, threads, JSON...)"
# The groups in the order the report lists them.
GROUPS = [
    FETCH,
    STRATEGY,
    EVENTS,
    KOMBU,
    "SQLAlchemy + psycopg",
    "MIME building",
    "SMTP (smtplib; waiting on the server)",
    "job-store scripts",
    "logging",
    "Flask/smorest",
    "marshmallow",
    "auth (JWT decode)",
    "publishing",
    "Redis, other calls",
    "gunicorn",
    "app and engine code (own frames)",
    OTHER,
]
# The groups that split what profiles of older trees (bench/profiles.json) call one group.
CELERY_GROUPS = (FETCH, STRATEGY, EVENTS, KOMBU)
LEGACY_CELERY = "Celery/kombu consumer"
FRAME = re.compile(r"(.*) \((.*?):\d+\)$")


def parse_frame(frame: str) -> tuple[str, str] | None:
    match = FRAME.match(frame)
    return (match.group(1), match.group(2)) if match else None


def _matches(func: str, path: str, where: str, funcs: tuple[str, ...] | None) -> bool:
    if where not in path:
        return False
    if funcs is None:
        return True
    name = func.rsplit(".", 1)[-1]
    return any(func.startswith(f) if f.endswith(".") else name == f for f in funcs)


def celery_part(frames: list[tuple[str, str]]) -> str:
    """The part of Celery a Celery-family sample belongs to, from its frame (the last) up to the root."""
    for func, path in reversed(frames):
        for group, where, funcs in CELERY_PARTS:
            if _matches(func, "/" + path, where, funcs):
                return group
    return KOMBU


def group_of(frames: list[tuple[str, str]]) -> str:
    """The group of one sample, frames root first.

    py-spy names stdlib files relative to the library ("smtplib.py", "logging/__init__.py")
    and functions with their class ("SMTP.getreply"): paths are matched with a "/" in
    front, functions by their last part.
    """
    flask = any("flask" in path for _, path in frames)
    # Under send_task or a task's apply_async (an app publishing a task; not a pool's apply_async, under
    # which a solo pool runs its tasks), or a kombu Producer outside Celery's events, every Celery and kombu
    # frame is publishing; under celery/events/, it is a worker's own events (task events, heartbeats).
    events = any("celery/events/" in path for _, path in frames)
    sending = any(
        f.endswith("send_task") or (f.endswith(("apply_async", "delay")) and "celery/app/task.py" in path)
        for f, path in frames
    ) or (not events and any(f.startswith("Producer.") for f, _ in frames))
    eventing = events and not sending
    # In the fetcher's thread, or building a fetched job's Celery message, everything is the fetch
    # (but for the strategy, which the fetcher calls itself only where the worker has no event loop).
    fetching = any(f.endswith(("Fetcher._run", "Fetcher._message", "Fetcher._template")) for f, _ in frames)
    elsewhere = ("celery/worker/strategy.py", "/logging/")
    if fetching and not any(where in "/" + path for _, path in frames for where in elsewhere):
        return FETCH
    saw_redis = False
    for index in range(len(frames) - 1, -1, -1):
        func, path = frames[index]
        path = "/" + path
        if any(t in path for t in TRANSPARENT):
            saw_redis = saw_redis or "/redis/" in path or "hiredis" in path
            continue
        for group, where, funcs in RULES:
            if not _matches(func, path, where, funcs):
                continue
            if group == "marshmallow" and flask:
                return "Flask/smorest"  # request parsing and answers, under flask-smorest
            if group in (CELERY_FAMILY, "publishing"):
                if sending:
                    return "publishing"
                if eventing:
                    return EVENTS
                if group == CELERY_FAMILY or "celery/" in path or "kombu/" in path:
                    return celery_part(frames[: index + 1])  # a worker's remote-control reply, say
            if group.startswith("app and engine") and saw_redis:
                return "Redis, other calls"
            return group
    return OTHER


def read_raw(raw: Path) -> list[tuple[list[tuple[str, str]], int]]:
    samples = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in (parse_frame(x) for x in stack.split(";")) if f is not None]
        samples.append((frames, int(count)))
    return samples


def short(path: str) -> str:
    path = path.split("site-packages/")[-1]
    path = re.sub(r"^.*/rideshare-before-[^/]*/tree/", "", path.split(str(ROOT) + "/")[-1])
    return re.sub(r"^.*/lib/python3\.\d+/", "", path)


def breakdown(raw: Path, top: int = 12) -> dict[str, Any]:
    """Samples grouped (percent of all), and the top functions by self samples."""
    groups: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, n in read_raw(raw):
        total += n
        groups[group_of(frames)] += n
        if frames:
            func, path = frames[-1]
            own[f"{func} ({short(path)})"] += n
    pct = {g: round(100 * groups[g] / total, 1) for g in GROUPS if groups[g]} if total else {}
    return {
        "samples": total,
        "groups": pct,
        "top_self": [[name, round(100 * n / total, 1)] for name, n in own.most_common(top)] if total else [],
    }


def summarize(raw: Path, top: int = 25) -> str:
    """The groups, then the top functions by inclusive and by self samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, n in read_raw(raw):
        total += n
        names = [f"{func} ({short(path)})" for func, path in frames]
        for name in set(names):
            inclusive[name] += n
        if names:
            own[names[-1]] += n
    found = breakdown(raw)
    lines = [f"{total} samples", "", "groups:"]
    lines += [f"{pct:5.1f}%  {g}" for g, pct in sorted(found["groups"].items(), key=lambda kv: -kv[1])]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top * 2) if "click" not in name]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


# Recording ------------------------------------------------------------------------------


def py_spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def record(pid: int, out: Path, seconds: int, subprocesses: bool = False) -> None:
    argv = [py_spy(), "record", "-p", str(pid), "-d", str(seconds), "-r", str(RATE_HZ), "-f", "raw", "-o", str(out)]
    argv.append("--gil")  # only the thread holding the GIL: where the CPU goes, not who waits
    if subprocesses:
        argv.append("--subprocesses")
    subprocess.run(argv, check=True, capture_output=True, timeout=seconds + 60)


def tree(pid: int) -> list[int]:
    found, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its descendants so far, seconds."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextlib.contextmanager
def counting_smtp_sink(port: int) -> Iterator[list[int]]:
    """An SMTP server on 127.0.0.1:port accepting every message after SMTP_LATENCY_S; yields [count]."""
    from aiosmtpd.controller import Controller

    count = [0]

    class SlowSink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(SMTP_LATENCY_S)
            count[0] += 1
            return "250 OK"

    controller = Controller(SlowSink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield count
    finally:
        controller.stop()


def profile_noop(bench: Any, seconds: int) -> tuple[Path, dict]:
    """One solo worker on 20,000 waiting no-op jobs (bench/full.py)."""
    from bench import full

    # Engine v3 runs the no-op on a queue of its own; older trees ran it on the analytics queue,
    # fed through the broker with the analytics worker's prefetch.
    name = getattr(full, "QUEUE", "analytics")
    env = {"LOG_LEVEL": "INFO"} if hasattr(full, "QUEUE") else {"LOG_LEVEL": "INFO", "CELERY_PREFETCH_MULTIPLIER": "4"}
    with full.flask_app.app_context():
        queue = full.noop_queue()
        for _ in range(20_000):
            queue.add({})

    def completed() -> int:
        with contextlib.suppress(Exception):
            return int(queue.store.metrics().get(f"{name}:completed", 0))
        return 0

    worker = bench.worker("bench.full", pool="solo", concurrency=1, env=env, queues=name)
    out = bench.tmp / "noop.raw"
    cpu, done = cpu_seconds(worker.pid), completed()
    record(worker.pid, out, seconds)
    cpu, done = cpu_seconds(worker.pid) - cpu, completed() - done
    return out, {
        "setting": "1 solo worker" + ("" if hasattr(full, "QUEUE") else ", prefetch 4"),
        "units": done,
        "unit": "job",
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_unit": round(cpu * 1000 / max(1, done), 2),
    }


def profile_email(bench: Any, seconds: int) -> tuple[Path, dict]:
    """The shipped email worker (threads x32, prefetch 1, INFO) on 4,000 waiting email jobs."""
    with counting_smtp_sink(bench.smtp_port) as sent:
        app = bench.queue_emails(4000)
        worker = bench.worker("tasks", pool="threads", concurrency=32, queues="email", env={"LOG_LEVEL": "INFO"})
        time.sleep(1)  # past the first connections
        out = bench.tmp / "email.raw"
        cpu, done = cpu_seconds(worker.pid), sent[0]
        record(worker.pid, out, seconds)
        cpu, done = cpu_seconds(worker.pid) - cpu, sent[0] - done
        app.extensions["db"].engine.dispose()
    return out, {
        "setting": "1 worker, threads x32 (shipped), SMTP answering after 100 ms",
        "units": done,
        "unit": "job",
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_unit": round(cpu * 1000 / max(1, done), 2),
    }


def gunicorn_argv(port: int) -> list[str]:
    argv = [sys.executable, "-m", "gunicorn"]
    if Path("rideshare/gunicorn_conf.py").exists():  # the shipped config, where the tree has one
        argv += ["-c", "python:rideshare.gunicorn_conf"]
    argv += ["rideshare:create_app()", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8"]
    return argv + ["--no-control-socket", "--log-level", "warning"]


def profile_payment(bench: Any, seconds: int) -> tuple[Path, dict]:
    """POST /payments on gunicorn 2 x 8 threads under wrk -c16 (bench.loadgen without wrk)."""
    from devstack.processes import free_port, wait_for_port
    from rideshare import create_app
    from rideshare.auth import issue_token
    from rideshare.cli import upgrade_database

    app = create_app()
    with app.app_context():
        upgrade_database()
        token = issue_token("42", ttl_seconds=3600)
    headers = {"Authorization": f"Bearer {token}"}
    ride = (
        app.test_client()
        .post("/rides", json={"riderId": "42", "driverId": "d", "pickup": "A", "dropoff": "B"}, headers=headers)
        .json["id"]
    )
    app.extensions["db"].engine.dispose()
    port = free_port()
    log = open(bench.tmp / "gunicorn-profile.log", "ab")  # noqa: SIM115 - the child keeps its copy
    gunicorn = subprocess.Popen(
        gunicorn_argv(port), env={**os.environ, **bench.env, "LOG_LEVEL": "INFO"}, stdout=log, stderr=log
    )
    log.close()
    bench.procs.append(gunicorn)
    wait_for_port("127.0.0.1", port, timeout=30, proc=gunicorn)
    url = f"http://127.0.0.1:{port}/payments"
    body = json.dumps({"amount": "10.00", "paymentMethod": "pm_card_visa", "rideId": ride})
    result: dict[str, Any] = {}

    def load(duration: float) -> dict:
        from bench import wrk

        if wrk.available():
            return wrk.load(url, "POST", body, headers, 16, duration)
        argv = [sys.executable, "-m", "bench.loadgen", url, "--method", "POST", "--json", body]
        argv += ["--seconds", str(duration), "--connections", "16", "--header", f"Authorization: Bearer {token}"]
        return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)

    # Warm-up: both workers booted, their lazy imports done, connections made; until the rate
    # settles (two 2-second loads in a row within 25%), at most 6 of them.
    rates = [load(2)["rps"]]
    while len(rates) < 6 and (len(rates) < 2 or rates[-1] < 0.75 * rates[-2] or rates[-2] < 0.75 * rates[-1]):
        rates.append(load(2)["rps"])
    cpu = cpu_seconds(gunicorn.pid)
    loader = threading.Thread(target=lambda: result.update(load(seconds + 1)))
    loader.start()
    out = bench.tmp / "payment.raw"
    record(gunicorn.pid, out, seconds, subprocesses=True)
    loader.join()
    cpu = cpu_seconds(gunicorn.pid) - cpu
    bench.procs.remove(gunicorn)
    gunicorn.terminate()
    gunicorn.wait(15)
    requests = result.get("requests", 0)
    return out, {
        "setting": "gunicorn 2 workers x 8 threads, 16 connections",
        "warm_up_rps": rates,
        "units": requests,
        "unit": "request",
        "rps": result.get("rps"),
        "p99_ms_while_profiled": result.get("p99_ms"),
        "non2xx": result.get("non2xx"),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_unit": round(cpu * 1000 / max(1, requests), 2),
    }


PROFILES = {"noop": profile_noop, "email": profile_email, "payment": profile_payment}


def profile(bench: Any, workload: str, seconds: int) -> dict[str, Any]:
    """Profile one workload with a Bench; the breakdown, the figures per unit and the raw file."""
    raw, figures = PROFILES[workload](bench, seconds)
    found = breakdown(raw)
    found.update(figures)
    found["raw"] = str(raw)
    found["summary"] = summarize(raw)
    return found


def describe_tree() -> str:
    import rideshare

    where = str(Path(rideshare.__file__).resolve().parent.parent)
    done = subprocess.run(["git", "-C", where, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return f"{done.stdout.strip()[:100]} ({where})"


def store(path: Path, label: str, workload: str, found: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    entry = {k: v for k, v in found.items() if k not in ("summary", "raw")}
    entry["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    entry["load_average"] = [round(x, 2) for x in os.getloadavg()]
    data.setdefault(label, {})[workload] = entry
    path.write_text(json.dumps(data, indent=2) + "\n")


def run_before(commit: str, workloads: list[str], seconds: int, out: Path) -> None:
    """Profile COMMIT's tree with this file, in a worktree of its own removed afterwards."""
    where = Path(tempfile.mkdtemp(prefix="rideshare-before-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), commit], check=True)
    try:
        shutil.copy(__file__, where / "bench" / "profile.py")
        env = {**os.environ, "PYTHONPATH": str(where)}
        check = [sys.executable, "-c", "import rideshare; print(rideshare.__file__)"]
        found = subprocess.run(check, cwd=where, env=env, capture_output=True, text=True, check=True).stdout
        if not found.strip().startswith(str(where)):
            raise RuntimeError(f"rideshare imports from {found.strip()}, not from {where}")
        argv = [sys.executable, "-m", "bench.profile", *workloads, "--seconds", str(seconds)]
        argv += ["--json", str(out.resolve()), "--label", "before"]
        subprocess.run(argv, cwd=where, env=env, check=True, timeout=900)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False)
        shutil.rmtree(where.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="+", choices=sorted(PROFILES))
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="store the grouped figures in this file")
    parser.add_argument("--label", default="after", help="the key they are stored under (default: after)")
    parser.add_argument("--before", metavar="COMMIT", default=None, help="profile COMMIT's tree (label 'before')")
    args = parser.parse_args()
    if args.before:
        run_before(args.before, args.workloads, args.seconds, args.json or ROOT / "bench" / "profiles.json")
        return
    from bench.run import Bench

    for workload in args.workloads:
        bench = Bench(quick=True)
        try:
            found = profile(bench, workload, args.seconds)
        finally:
            bench.close()
        found["tree"] = describe_tree()
        print(f"== {workload} ({found['tree']}) ==")
        print(found["summary"])
        if found.get("units") is not None:
            print(f"\n{found['units']} {found['unit']}s, {found['cpu_ms_per_unit']} ms of CPU per {found['unit']}")
        print(f"raw py-spy samples: {found['raw']}\n", file=sys.stderr)
        if args.json:
            store(args.json, args.label, workload, found)


if __name__ == "__main__":
    main()
