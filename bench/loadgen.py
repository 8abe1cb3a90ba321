"""An async HTTP load generator, run as its own process: fixed connections for a fixed time.

    python -m bench.loadgen URL --method POST --json '{...}' --header 'Authorization: Bearer ...'
Prints one JSON line: requests, errors, rps, p50_ms, p99_ms, statuses.
"""

import argparse
import asyncio
import json
import time

import aiohttp


async def run(
    url: str, method: str, body: bytes | None, headers: dict[str, str], connections: int, seconds: float
) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.request(method, url, data=body) as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else 0.0

    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--json", default=None)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    body = None
    if args.json is not None:
        body = args.json.encode()
        headers["Content-Type"] = "application/json"
    print(json.dumps(asyncio.run(run(args.url, args.method, body, headers, args.connections, args.seconds))))


if __name__ == "__main__":
    main()
