"""Where a worker's time goes: py-spy samples a real worker while it drains jobs.

    .venv/bin/python -m bench.profile noop     # CPU-light no-op jobs, one solo worker
    .venv/bin/python -m bench.profile email    # email jobs, SMTP answering after 100 ms, threads x32

(installed by `bash scripts/run-bench.sh`, which pins py-spy in the bench extra.)
Prints the functions with the most samples, inclusive and self, and keeps the raw
py-spy file (collapsed stacks, for a flame graph) under the run's temporary folder.
Samples are of running threads only: a thread waiting in a socket call the profiler
does not know as idle still counts, so read socket reads as waiting on that server.
"""

import argparse
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.run import Bench, slow_smtp_sink


def summarize(raw: Path, top: int = 25) -> str:
    """The top functions by inclusive and by self samples, from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        names = []
        for frame in stack.split(";"):
            match = re.match(r"(.*) \((.*?):\d+\)", frame)
            if match:
                where = match.group(2).split("site-packages/")[-1].split(str(Path.cwd()) + "/")[-1]
                names.append(f"{match.group(1)} ({where})")
            else:
                names.append(frame)
        for name in set(names):
            inclusive[name] += n
        own[names[-1]] += n
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top * 2) if "click" not in name]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


def record(pid: int, out: Path, seconds: int) -> None:
    subprocess.run(
        [
            shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=seconds + 60,
    )


def profile_noop(bench: Bench, seconds: int) -> Path:
    from bench.full import flask_app, noop_queue

    with flask_app.app_context():
        queue = noop_queue()
        for _ in range(20_000):
            queue.add({})
    worker = bench.worker("bench.full", pool="solo", concurrency=1, env={"CELERY_PREFETCH_MULTIPLIER": "4"})
    out = bench.tmp / "noop.raw"
    record(worker.pid, out, seconds)
    return out


def profile_email(bench: Bench, seconds: int) -> Path:
    with slow_smtp_sink(bench.smtp_port):
        app = bench.queue_emails(4000)
        worker = bench.worker("tasks", pool="threads", concurrency=32, queues="email")
        out = bench.tmp / "email.raw"
        record(worker.pid, out, seconds)
        app.extensions["db"].engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["noop", "email"])
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()
    bench = Bench(quick=True)
    try:
        raw = profile_noop(bench, args.seconds) if args.workload == "noop" else profile_email(bench, args.seconds)
        print(summarize(raw))
        print(f"\nraw py-spy samples: {raw}", file=sys.stderr)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
