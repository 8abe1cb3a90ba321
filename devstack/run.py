"""Run the whole stack on this machine, bound to 127.0.0.1 only.

    bash scripts/run-stack.sh        (sets up .venv, then runs: python -m devstack.run)

Starts, each as its own process:

- Redis, only when REDIS_URL is unset and nothing answers at REDIS_HOST:REDIS_PORT
  (default 127.0.0.1:6379); AOF data in <var>/redis;
- the SMTP sink on 127.0.0.1:1025 (mail lands in <var>/mail), unless SMTP_HOST is set;
- localstripe on 127.0.0.1:8420, unless STRIPE_API_BASE is set;
- the schema migration (flask --app rideshare db upgrade), once;
- the Procfile under honcho: the API (gunicorn), one Celery worker per queue, Flower.

Settings come from the environment, then .env, then the app's defaults. The
resulting REDIS_URL, SMTP_HOST/SMTP_PORT and STRIPE_API_BASE are passed to every
child. Ctrl-C or SIGTERM stops everything started here, the app first and Redis
last; nothing else is touched.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import load_dotenv

from devstack.processes import port_open, start_python, start_redis, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
SMTP_SINK_PORT = 1025
LOCALSTRIPE_PORT = 8420
STOP_TIMEOUT_S = 30.0


class StartupError(RuntimeError):
    """The stack cannot start as configured; the message says what to change."""


class Shutdown(BaseException):
    """A stop signal arrived (Ctrl-C, SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def say(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def redact(url: str) -> str:
    """url with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command) for every process, from ps (Linux and macOS)."""
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,command="], capture_output=True, text=True, check=False).stdout
    table = {}
    for line in out.splitlines():
        fields = line.split(None, 2)
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            table[int(fields[0])] = (int(fields[1]), fields[2] if len(fields) > 2 else "")
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Every process below roots in table: pid -> command."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                todo.append(child)
    return found


class Stack:
    """The processes this run started, and how to stop them."""

    def __init__(self) -> None:
        self.services: list[tuple[str, subprocess.Popen]] = []  # stopped last, in reverse
        self.honcho: subprocess.Popen | None = None
        self.seen: dict[int, str] = {}  # every descendant ever seen: pid -> command
        self.force = False
        self.deferring = False
        self.pending: int | None = None

    def on_signal(self, signum: int, _frame: object) -> None:
        """Stop the start-up; while a process is being spawned, wait until it is recorded."""
        if self.deferring:
            self.pending = signum
            return
        raise Shutdown(signum)

    @contextmanager
    def spawning(self) -> Iterator[None]:
        """A section a stop signal must not interrupt: a child started here is always recorded."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending is not None:
            raise Shutdown(self.pending)

    def remember_tree(self) -> None:
        """Record the processes below ours, so none outlives us if its parent dies first."""
        roots = {p.pid for _, p in self.services}
        if self.honcho is not None:
            roots.add(self.honcho.pid)
        self.seen.update(descendants(roots, process_table()))

    def _wait(self, proc: subprocess.Popen, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.force:
            if proc.poll() is not None:
                return True
            time.sleep(0.1)
        return proc.poll() is not None

    def _stop(self, name: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        if not self._wait(proc, timeout):
            say(f"{name} (pid {proc.pid}) did not stop in {timeout:g} s; killing it")
            proc.kill()
            proc.wait()

    def _stop_leftovers(self) -> None:
        """Stop any recorded descendant still running, checking it is still the same process."""
        alive = process_table()
        left = {pid: cmd for pid, cmd in self.seen.items() if pid in alive and alive[pid][1] == cmd}
        if not left:
            return
        say(f"stopping {len(left)} leftover process(es): {sorted(left)}")
        for pid in left:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.force:
            alive = process_table()
            if not any(pid in alive and alive[pid][1] == cmd for pid, cmd in left.items()):
                return
            time.sleep(0.2)
        alive = process_table()
        for pid, cmd in left.items():
            if pid in alive and alive[pid][1] == cmd:
                _signal(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the app processes (honcho and its children), then the services, Redis last."""
        self.remember_tree()
        if self.honcho is not None and self.honcho.poll() is None:
            say("stopping the API, workers and Flower")
            # honcho sends SIGTERM to each child's process group, and SIGKILL after 5 s.
            self._stop("honcho", self.honcho, STOP_TIMEOUT_S)
        self._stop_leftovers()
        for name, proc in reversed(self.services):
            say(f"stopping {name}")
            self._stop(name, proc)
        self._stop_leftovers()
        say("stopped")


def _signal(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def _free_or_fail(port: int, what: str, setting: str) -> None:
    if port_open("127.0.0.1", port):
        raise StartupError(f"port {port} on 127.0.0.1 is already in use; cannot start {what} ({setting})")


def redis_eviction_risk(env: dict[str, str]) -> str | None:
    """What the Redis in env risks by its maxmemory-policy (anything but noeviction), or None.

    REDIS_ALLOW_EVICTION=true accepts the risk; a Redis that does not answer is left to the app.
    """
    import redis

    from jobqueue.memory import check_eviction_policy

    allow = env.get("REDIS_ALLOW_EVICTION", "").lower() in ("1", "true", "yes")
    client = redis.Redis.from_url(env["REDIS_URL"], socket_timeout=3, socket_connect_timeout=3)
    try:
        return check_eviction_policy(client, allow=allow, who="devstack")
    finally:
        client.close()


def start_services(stack: Stack, env: dict[str, str], var_dir: Path) -> list[str]:
    """Start Redis, the SMTP sink and localstripe as needed; returns banner lines."""
    from celeryconfig import redis_url_from_env

    lines = []
    logs = var_dir / "log"
    logs.mkdir(parents=True, exist_ok=True)

    # Redis: the broker and the job store.
    if env.get("REDIS_URL"):
        url = urlsplit(env["REDIS_URL"])
        if url.hostname and not port_open(url.hostname, url.port or 6379):
            say(f"warning: nothing answers at REDIS_URL {redact(env['REDIS_URL'])}")
        lines.append(f"Redis     {redact(env['REDIS_URL'])} (REDIS_URL)")
    else:
        host = env.get("REDIS_HOST", "127.0.0.1")
        port = int(env.get("REDIS_PORT") or 6379)
        if port_open(host, port):
            lines.append(f"Redis     {redact(redis_url_from_env(env))} (already running)")
        elif host in LOCAL_HOSTS:
            say(f"no Redis at {host}:{port}; starting one (AOF in {var_dir / 'redis'})")
            with stack.spawning():
                proc = start_redis(
                    var_dir / "redis",
                    port,
                    password=env.get("REDIS_PASSWORD") or None,
                    start_new_session=True,
                )
                stack.services.append(("redis", proc))
            url = redact(redis_url_from_env(env))
            lines.append(f"Redis     {url} (started here, AOF in {var_dir / 'redis'})")
        else:
            raise StartupError(
                f"Redis at {host}:{port} is not reachable; start it, or unset REDIS_HOST to run one here"
            )
        env["REDIS_URL"] = redis_url_from_env(env)
    risk = redis_eviction_risk(env)
    if risk:
        say(f"ERROR: {risk}")
        lines.append(f"  ERROR   {risk}")

    # SMTP: the sink keeps every message as an .eml file.
    if env.get("SMTP_HOST"):
        lines.append(f"Mail      SMTP {env['SMTP_HOST']}:{env.get('SMTP_PORT') or 1025} (SMTP_HOST)")
    else:
        port = int(env.get("SMTP_PORT") or SMTP_SINK_PORT)
        _free_or_fail(port, "the SMTP sink", "set SMTP_HOST/SMTP_PORT to use another server")
        maildir = var_dir / "mail"
        with stack.spawning():
            proc = start_python(
                "devstack.smtp_sink",
                ["--port", str(port), "--maildir", str(maildir)],
                env=env,
                log=logs / "smtp_sink.log",
                start_new_session=True,
            )
            stack.services.append(("smtp sink", proc))
        wait_for_port("127.0.0.1", port, proc=proc)
        env["SMTP_HOST"], env["SMTP_PORT"] = "127.0.0.1", str(port)
        lines.append(f"Mail      SMTP 127.0.0.1:{port} -> {maildir}/*.eml (sink)")

    # Stripe: localstripe, persisted in /tmp/localstripe.pickle.
    if env.get("STRIPE_API_BASE"):
        lines.append(f"Stripe    {env['STRIPE_API_BASE']} (STRIPE_API_BASE)")
    else:
        _free_or_fail(LOCALSTRIPE_PORT, "localstripe", "set STRIPE_API_BASE to use another server")
        with stack.spawning():
            proc = start_python(
                "devstack.localstripe_server",
                ["--port", str(LOCALSTRIPE_PORT), "--persist"],
                env=env,
                log=logs / "localstripe.log",
                start_new_session=True,
            )
            stack.services.append(("localstripe", proc))
        wait_for_port("127.0.0.1", LOCALSTRIPE_PORT, proc=proc)
        env["STRIPE_API_BASE"] = f"http://127.0.0.1:{LOCALSTRIPE_PORT}"
        lines.append(f"Stripe    {env['STRIPE_API_BASE']} (localstripe)")
    return lines


def migrate(env: dict[str, str]) -> None:
    """flask --app rideshare db upgrade, before the API and the workers start."""
    say("migrating the database schema")
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "rideshare", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        check=False,
    )
    if result.returncode != 0:
        raise StartupError(f"the schema migration failed (exit {result.returncode}); see above")


def start_app(stack: Stack, env: dict[str, str], api_port: int) -> None:
    """The Procfile under honcho. honcho gives the first process (api) PORT=api_port."""
    if not PROCFILE.is_file():
        raise StartupError(f"no Procfile at {PROCFILE}")
    argv = [
        sys.executable,
        "-m",
        "honcho",
        "start",
        "--procfile",
        str(PROCFILE),
        "--app-root",
        str(ROOT),
        # The environment is already complete (shell, then .env): honcho must not
        # re-read .env, whose values would override it.
        "--env",
        os.devnull,
        "--port",
        str(api_port),
    ]
    with stack.spawning():
        stack.honcho = subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True)


def wait_until_listening(stack: Stack, ports: list[int], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.honcho is not None and stack.honcho.poll() is not None:
            raise StartupError(f"the app processes exited (honcho exit {stack.honcho.returncode}); see above")
        stack.remember_tree()
        if all(port_open("127.0.0.1", port) for port in ports):
            return
        time.sleep(0.5)
    raise StartupError(f"nothing listening on 127.0.0.1 ports {ports} after {timeout:g} s")


def run() -> int:
    os.chdir(ROOT)
    # The shell wins over .env, as in create_app (override=False).
    load_dotenv(ROOT / ".env", override=False)
    env = dict(os.environ)
    var_dir = Path(env.get("RIDESHARE_VAR_DIR") or "var").resolve()
    env["RIDESHARE_VAR_DIR"] = str(var_dir)
    env.setdefault("FLOWER_BASIC_AUTH", "admin:admin")
    # The gateways' limits (README, "Configuration"): every process seeds them into the job
    # store at start, unless an operator has set the queue's limits at run time.
    env.setdefault("PAYMENT_RATE_LIMIT", "25/s")
    env.setdefault("EMAIL_RATE_LIMIT", "10/s")
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the terminal as they happen
    api_port = int(env.get("PORT") or 8000)
    flower_port = int(env.get("FLOWER_PORT") or 5555)

    stack = Stack()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stack.on_signal)

    code = 0
    try:
        _free_or_fail(api_port, "the API", "set PORT")
        _free_or_fail(flower_port, "Flower", "set FLOWER_PORT")
        lines = start_services(stack, env, var_dir)
        migrate(env)
        start_app(stack, env, api_port)
        wait_until_listening(stack, [api_port, flower_port])
        user = env["FLOWER_BASIC_AUTH"].split(",")[0].split(":")[0]
        db_url = env.get("DATABASE_URL") or f"sqlite:///{var_dir / 'rideshare.sqlite3'}"
        banner = [
            f"API       http://127.0.0.1:{api_port}  (/openapi.json, /healthz, /readyz)",
            f"Flower    http://127.0.0.1:{flower_port}  (FLOWER_BASIC_AUTH user {user!r})",
            *lines,
            f"Database  {redact(db_url)}",
            f"Logs      app: this terminal; SMTP sink and localstripe: {var_dir / 'log'}",
            "Token     .venv/bin/flask --app rideshare token create --user 42",
            "Ctrl-C stops everything started here.",
        ]
        print(
            "\n".join(["", "=" * 72, "rideshare stack is up", *(f"  {b}" for b in banner), "=" * 72, ""]),
            flush=True,
        )
        tick = 0
        while True:
            if stack.honcho.poll() is not None:
                say(f"the app processes exited (honcho exit {stack.honcho.returncode})")
                code = stack.honcho.returncode or 1
                break
            dead = [name for name, proc in stack.services if proc.poll() is not None]
            if dead:
                say(f"{', '.join(dead)} exited; stopping the stack")
                code = 1
                break
            if tick % 10 == 0:
                stack.remember_tree()
            tick += 1
            time.sleep(0.5)
    except Shutdown as stop:
        say(f"{stop} received")
    except StartupError as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        # A second Ctrl-C during shutdown skips the waiting: SIGKILL at once.
        def hurry(_signum: int, _frame: object) -> None:
            stack.force = True

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, hurry)
        stack.stop()
    return code


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
