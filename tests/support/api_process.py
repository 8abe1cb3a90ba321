"""The API as a real process: gunicorn with the shipped settings, on loopback."""

import subprocess
import sys
from pathlib import Path

from devstack.processes import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]


def start_api(env: dict[str, str], log: Path, *, threads: int = 2) -> tuple[subprocess.Popen, str]:
    """gunicorn (one worker process, as the Procfile runs it) on a free port; returns it and its base URL.

    gunicorn's master restarts the worker whenever it exits, as it does in production.
    """
    port = free_port()
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:rideshare.gunicorn_conf",
                "rideshare:create_app()",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                str(threads),
                "--no-control-socket",
            ],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port("127.0.0.1", port, proc=proc)
    return proc, f"http://127.0.0.1:{port}"
