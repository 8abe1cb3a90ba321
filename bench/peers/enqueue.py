"""Enqueue N no-op jobs for a Python peer from this one process; prints one JSON line.

    REDIS_URL=... python -m bench.peers.enqueue celery --jobs 20000
    REDIS_URL=... python -m bench.peers.enqueue dramatiq --jobs 20000 --mode group

The clock runs from just before the first job to just after the last; imports and
interpreter start are not in it (as for BullMQ's enqueue.js, timed after connecting).
Modes: celery `single` (`noop.apply_async(queue="analytics")` per job); dramatiq
`single` (`noop.send()` per job) or `group` (`group([...]).run()` per chunk: Dramatiq's
only batch form; its Redis broker still enqueues each message with its own call).
"""

import argparse
import json
import time


def enqueue(peer: str, jobs: int, mode: str, chunk: int) -> float:
    if peer == "celery":
        from bench.peers.stock_celery import app, noop

        with app.connection_for_write() as conn:  # connect first, as the other enqueuers do
            conn.ensure_connection(max_retries=3)
        started = time.perf_counter()
        for _ in range(jobs):
            noop.apply_async(queue="analytics")
        return jobs / (time.perf_counter() - started)
    from dramatiq import group

    from bench.peers.dramatiq_app import broker, noop

    broker.client.ping()
    started = time.perf_counter()
    if mode == "group":
        for i in range(0, jobs, chunk):
            group(noop.message() for _ in range(min(chunk, jobs - i))).run()
    else:
        for _ in range(jobs):
            noop.send()
    return jobs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=["celery", "dramatiq"])
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--mode", choices=["single", "group"], default="single")
    parser.add_argument("--chunk", type=int, default=1000)
    args = parser.parse_args()
    rate = enqueue(args.peer, args.jobs, args.mode, args.chunk)
    print(json.dumps({"peer": args.peer, "mode": args.mode, "jobs": args.jobs, "rate": round(rate, 1)}))


if __name__ == "__main__":
    main()
