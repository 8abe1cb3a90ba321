"""What the flow-control tests share: workers started side by side, and what they measure
(the most events in any window, the most intervals at once)."""

import subprocess
from bisect import bisect_left
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devstack.processes import stop
from jobqueue.store import JobStore
from tests.conftest import start_worker


def start_workers(env: dict[str, str], logs: Path, names: Iterable[str], **options: object) -> list[subprocess.Popen]:
    """One worker per name (logs/<name>.log, node <name>-<JOB_KEY_PREFIX>@%h), started side by
    side; start_worker's options. All are ready, or none is left running."""
    names = list(names)
    tag = env["JOB_KEY_PREFIX"]
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [
            pool.submit(start_worker, env, logs / f"{name}.log", name=f"{name}-{tag}@%h", **options) for name in names
        ]
    workers, errors = [], []
    for future in futures:
        try:
            workers.append(future.result())
        except Exception as exc:  # noqa: BLE001 - stop the others, then raise the first
            errors.append(exc)
    if errors:
        for worker in workers:
            stop(worker)
        raise errors[0]
    return workers


def most_in_any_window(times: Iterable[float], window: float) -> int:
    """The most of times that fall in any half-open window [t, t + window) (a sliding window)."""
    ordered = sorted(times)
    # The busiest window can always start at an event: count from each one.
    return max((bisect_left(ordered, t + window, i) - i for i, t in enumerate(ordered)), default=0)


def most_at_once(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one instant; one that ends when another
    starts does not overlap it."""
    spans = list(intervals)
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def most_active(store: JobStore, queue: str, since_ms: int = 0) -> int:
    """The most jobs of queue active at once (from since_ms on Redis's clock), replayed from
    its event stream: every move is an entry, in the order the store made them, so no
    process's clock comes in between."""
    active: set[str] = set()
    peak = 0
    for entry_id, entry in store.redis.xrange(store.keys.queue(queue, "events")):
        if entry["state"] == "active":
            active.add(entry["id"])
        else:
            active.discard(entry["id"])
        if int(entry_id.split("-")[0]) >= since_ms:
            peak = max(peak, len(active))
    return peak
