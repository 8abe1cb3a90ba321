"""Turns the bench results into docs/benchmarks.md and docs/benchmarks.png."""

import json
from pathlib import Path
from typing import Any

TARGETS = {
    "tracking": "job tracking costs at most 15% of drain throughput (ratio >= 0.85)",
    "drain": "CPU-light drain through the full path >= 3,000 jobs/s on 2 cores",
    "io": "I/O-bound jobs reach >= 90% of the Little's-law ceiling",
    "api": "enqueue endpoints >= 50% of /healthz, p99 < 25 ms at 16 connections",
    "latency": "enqueue-to-start p50 < 5 ms at light load",
}


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def write_report(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    drain, latency, memory = results["drain"], results["latency"], results["memory"]
    api, io = results["api"], results["io"]
    best_io = max(io, key=lambda row: row["ratio"])
    scaling = results.get("scaling", [])
    best_drain = max([drain["bulk_drain"], *(row["bulk"] for row in scaling)])
    drain_text = (
        f"{best_drain:,} jobs/s with bulk adds (batches of {drain['batch_size']});"
        f" {max([drain['full_drain'], *(row['single'] for row in scaling)]):,} jobs/s with single adds"
    )
    at_64 = [row for row in io if row["concurrency"] * row["processes"] >= 64]
    io_text = f"best {best_io['ratio']:.0%} ({best_io['pool']} x{best_io['concurrency']})" + "".join(
        f"; {row['ratio']:.0%} at {row['processes']} x {row['pool']} x{row['concurrency']}" for row in at_64
    )
    api_ok = min(api["payment_ratio"], api["welcome_ratio"]) >= 0.5 and (
        max(api["payment"]["p99_ms"], api["welcome"]["p99_ms"]) < 25
    )
    api_text = (
        f"payments {api['payment_ratio']:.0%} (p99 {api['payment']['p99_ms']} ms), "
        f"welcome email {api['welcome_ratio']:.0%} (p99 {api['welcome']['p99_ms']} ms)"
    )
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `bash scripts/run-bench.sh` on {results['machine']}, everything on loopback, one run.",
        "Every figure stands next to its baseline from the same run; absolute numbers vary with the machine's load.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| {TARGETS['tracking']} | {drain['ratio']}x bare Celery | {verdict(drain['ratio'] >= 0.85)} |",
        f"| {TARGETS['drain']} | {drain_text} | {verdict(best_drain >= 3000)} |",
        f"| {TARGETS['io']} | {io_text} | {verdict(all(row['ratio'] >= 0.9 for row in at_64))} |",
        f"| {TARGETS['api']} | {api_text} | {verdict(api_ok)} |",
        f"| {TARGETS['latency']} | p50 {latency['light_p50']} ms | {verdict(latency['light_p50'] < 5)} |",
        "",
        f"## (a) API enqueue, 16 connections ({api['healthz'].get('tool', 'bench.loadgen')}),"
        f" gunicorn {api['gunicorn'][0]} workers x {api['gunicorn'][1]} threads",
        "",
        "| endpoint | requests/s | vs /healthz | p50 ms | p99 ms | server CPU ms per request |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in (
        ("healthz", "GET /healthz"),
        ("welcome", "POST /send-welcome-email"),
        ("payment", "POST /payments"),
    ):
        row = api[name]
        ratio = row["rps"] / api["healthz"]["rps"]
        cpu = row.get("server_cpu_ms_per_request", "")
        lines.append(f"| {label} | {row['rps']:,} | {ratio:.2f} | {row['p50_ms']} | {row['p99_ms']} | {cpu} |")
    lines += [
        "",
        f"## (b) Drain of {drain['jobs']:,} CPU-light jobs, {drain['settings']}",
        "",
        "| path | enqueue jobs/s | drain jobs/s | drain vs bare |",
        "| --- | --- | --- | --- |",
        f"| bare Celery no-op (`apply_async`, INCR on finish) | {drain['bare_enqueue']:,}"
        f" | {drain['bare_drain']:,} | 1.00 |",
        f"| full path, one `add()` per job (queue API, job store, JobTask) | {drain['full_enqueue']:,}"
        f" | {drain['full_drain']:,} | {drain['ratio']:.2f} |",
        f"| full path, `add_bulk()` (batches of {drain['batch_size']} jobs per message) | {drain['bulk_enqueue']:,}"
        f" | {drain['bulk_drain']:,} | {drain['bulk_ratio']:.2f} |",
        "",
        f"### Throughput as workers are added ({drain['jobs'] // 2:,} jobs each, solo pool, one process per worker)",
        "",
        "| workers | single adds, jobs/s | bulk adds, jobs/s |",
        "| --- | --- | --- |",
        *(f"| {row['workers']} | {row['single']:,} | {row['bulk']:,} |" for row in scaling),
        "",
        "## (c) I/O-bound email jobs, SMTP answering after 100 ms",
        "",
        "| workers x pool x concurrency | jobs | jobs/s | Little's-law ceiling | share of ceiling"
        " | worker CPU ms per job | worker RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in io:
        cells = [
            f"{row['processes']} x {row['pool']} x{row['concurrency']}",
            row["jobs"],
            row["rate"],
            f"{row['ceiling']:.0f}",
            f"{row['ratio']:.0%}",
            row["worker_cpu_ms_per_job"],
            row["worker_rss_mb"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "## (d) Enqueue-to-start latency (job created to job started)",
        "",
        "| load | p50 ms | p99 ms |",
        "| --- | --- | --- |",
        f"| light (one job every 10 ms) | {latency['light_p50']} | {latency['light_p99']} |",
        f"| burst of 2,000 jobs | {latency['burst_p50']} | {latency['burst_p99']} |",
        "",
        "## (e) Memory",
        "",
        f"- Worker (main process + 2 pool processes), RSS: idle {memory['worker_idle_mb']} MB,"
        f" after the drain {memory['worker_busy_mb']} MB.",
        f"- Job store: {memory['store_mb_per_10k']} MB of Redis per 10,000 retained email jobs"
        " (broker lists excluded).",
        "",
        "![Throughput](benchmarks.png)",
        "",
        "<details><summary>Raw results</summary>",
        "",
        "```json",
        json.dumps(results, indent=2),
        "```",
        "</details>",
        "",
    ]
    (out / "benchmarks.md").write_text("\n".join(lines))
    plot(results, out / "benchmarks.png")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    scaling = results["scaling"]
    workers = [row["workers"] for row in scaling]
    left.axhline(
        results["drain"]["bare_drain"], color="#999", linestyle="--", label="bare Celery, 1 worker, prefork x2"
    )
    left.plot(workers, [row["single"] for row in scaling], marker="o", label="full path, single adds")
    left.plot(workers, [row["bulk"] for row in scaling], marker="o", label="full path, bulk adds")
    left.set_xticks(workers)
    left.set_xlabel("solo workers on one queue")
    left.set_title("CPU-light drain (jobs/s)")
    left.legend()
    io = results["io"]
    labels = [f"{r['processes']}x {r['pool']} x{r['concurrency']}" for r in io]
    right.bar(labels, [r["ceiling"] for r in io], color="#ddd", label="Little's-law ceiling")
    right.bar(labels, [r["rate"] for r in io], color="#2b7bba", label="measured")
    right.set_title("I/O-bound email jobs, 100 ms SMTP (jobs/s)")
    right.tick_params(axis="x", labelrotation=20)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
