"""Load from wrk (Debian's package): C, one thread, so the load costs the server little CPU.

bench.loadgen (Python, aiohttp) is the fallback where wrk is not installed.
"""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

# wrk's Lua hooks: the request to send, and a JSON line with the figures when done.
SCRIPT = """
wrk.method = {method}
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  local failed = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{{"requests": %d, "errors": %d, "non2xx": %d, "rps": %.1f, "p50_ms": %.2f, "p99_ms": %.2f}}\\n',
    summary.requests, failed, non2xx, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for our ASCII bodies


def available() -> bool:
    return shutil.which("wrk") is not None


def load(url: str, method: str, body: str | None, headers: dict[str, str], connections: int, seconds: float) -> dict:
    """Run wrk against url; the figures as bench.loadgen gives them."""
    if body is not None:
        headers = {**headers, "Content-Type": "application/json"}
    lines = "\n".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items())
    lua_body = lua_string(body) if body is not None else "nil"
    script = SCRIPT.format(method=lua_string(method), body=lua_body, headers=lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "request.lua"
        path.write_text(script)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(path), url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["tool"] = "wrk"
    return result
