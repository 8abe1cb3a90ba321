"""What traces cost a worker: its CPU per no-op job with tracing on and off, as a ratio.

    python -m bench.tracing [--jobs 3000] [--rounds 3]

The same drain as the suite's (b) (bench/run.py): no-op jobs added one at a time to the
paused bench queue (bench/full.py), then drained by a fresh worker from the moment
resume() lets it start, its CPU (the process and its children, from /proc) divided by
the jobs. One solo worker, so the jobs run in the process that fetches them, as on the
shipped threads pools, where the worker sets tracing up in its own process.

- off: the environment asks for no traces (OTEL_SDK_DISABLED=true; rideshare/telemetry.py
  then installs nothing): the engine's checks alone (jobqueue/tracing.py).
- on: OTEL_EXPORTER_OTLP_ENDPOINT names a sink in this process that answers every export
  with 200 and counts the spans: the job's span, its Redis calls, the batch processor and
  the OTLP/HTTP export, all paid by the worker; the sink's own CPU is not counted.

The jobs are added without a trace (this process does not trace), so each run starts one.
Off and on take turns, the order alternating per round; the figures are medians. What
tracing costs while off is far below a drain's noise, so it is also timed on its own: the
engine's two calls per job with no SDK provider set.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.procs import cpu_seconds
from devstack.processes import free_port

FLUSH_WAIT_S = 6.0

MODES = {
    "off": {"OTEL_SDK_DISABLED": "true"},
    "on": {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "bench-worker"},
}


class SpanSink(ThreadingHTTPServer):
    """An OTLP/HTTP endpoint that keeps nothing but a count of the spans it was sent."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _SinkHandler)
        self.spans = 0
        self.lock = threading.Lock()


class _SinkHandler(BaseHTTPRequestHandler):
    server: SpanSink

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with self.server.lock:
            self.server.spans += count
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def span_sink() -> Iterator[SpanSink]:
    sink = SpanSink(free_port())
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()


def measure(bench: Any, jobs: int, rounds: int) -> dict[str, Any]:
    """Drain jobs no-op jobs with tracing off and on, rounds times each; the worker's CPU per job and the ratio."""
    from bench.full import QUEUE, flask_app, noop_queue
    from rideshare.cli import upgrade_database

    bench.client_logs_to_file()
    cpu_ms: dict[str, list[float]] = {mode: [] for mode in MODES}
    spans_per_job: list[float] = []
    with flask_app.app_context(), span_sink() as sink:
        upgrade_database()  # the workers' housekeeping (the outbox relay) runs as in production
        queue = noop_queue()

        def done() -> int:
            return queue.store.metrics().get(f"{QUEUE}:completed", 0)

        for index in range(rounds):
            for mode in list(MODES) if index % 2 == 0 else list(MODES)[::-1]:
                bench.redis.flushdb()
                queue.pause()  # the worker boots without taking any; timed_drain resumes the queue
                for _ in range(jobs):
                    queue.add({})
                env = dict(MODES[mode])
                if mode == "on":
                    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.server_port}"
                before = sink.spans
                found = bench.timed_drain("bench.full", done, jobs, pool="solo", concurrency=1, env=env)
                # The batch processor exports the spans of the drain's last seconds up to 5 s later
                # (OTEL_BSP_SCHEDULE_DELAY): that CPU is counted too, and the same wait is added off.
                [proc] = found["procs"]
                idle = cpu_seconds(proc.pid)
                time.sleep(FLUSH_WAIT_S)
                cost = found["cpu_ms"] + (cpu_seconds(proc.pid) - idle) * 1000 / jobs
                bench.retire(proc)
                cpu_ms[mode].append(cost)
                if mode == "on":
                    spans_per_job.append((sink.spans - before) / jobs)
                print(f"[bench] tracing round {index + 1} {mode}: {cost:.3f} ms CPU per job", flush=True)
    off, on = (statistics.median(cpu_ms[mode]) for mode in ("off", "on"))
    off_path_us = off_path_cost_us()
    return {
        # What tracing's code costs a job while off, next to a drain's noise: timed directly.
        "off_path_us_per_job": round(off_path_us, 3),
        "off_path_share_of_job_cpu": f"{off_path_us / 1000 / off:.4%}",
        "jobs": jobs,
        "rounds": rounds,
        "pool": "solo x1",
        "worker_cpu_ms_per_job_off": round(off, 3),
        "worker_cpu_ms_per_job_on": round(on, 3),
        "ratio_on_off": round(on / off, 2),
        "spans_exported_per_job": round(statistics.median(spans_per_job), 2),
        "rounds_ms": {mode: [round(v, 3) for v in values] for mode, values in cpu_ms.items()},
    }


def off_path_cost_us(calls: int = 200_000) -> float:
    """Microseconds per job of the engine's tracing code with no SDK provider: carrier() when the
    job is added, job_span() around its run. In a fresh process, which sets none."""
    code = (
        "import timeit\n"
        "from jobqueue import tracing\n"
        "class Job: id = 'j'; trace = ''\n"
        "def one():\n"
        "    tracing.carrier()\n"
        "    with tracing.job_span(Job, 'bench', 1): pass\n"
        f"print(min(timeit.repeat(one, number={calls}, repeat=5)) / {calls} * 1e6)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout)


def main() -> None:
    from bench.run import Bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000, help="no-op jobs per drain")
    parser.add_argument("--rounds", type=int, default=3, help="drains per mode")
    args = parser.parse_args()
    bench = Bench(quick=True)
    try:
        result = measure(bench, args.jobs, args.rounds)
    finally:
        bench.close()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
