"""An HTTP proxy on loopback in front of localstripe that can inject gateway faults."""

import http.client
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# (status, headers, body) the proxy answers with in the gateway's place.
Answer = tuple[int, dict[str, str], bytes]


class FaultProxy:
    """Forwards to target; queued faults ('500', 'drop' or ('sleep', s); None passes) hit the
    next requests, and rewrite rules may change the JSON answers (a gateway's other states)."""

    def __init__(self, port: int, target: str) -> None:
        self.port = port
        self.target = urlsplit(target)
        self.faults: deque = deque()
        self.requests: list[tuple[str, str, float]] = []
        self.latency = 0.0
        self.lock = threading.Lock()
        self.rules: list[Callable[[str, str, dict], dict | None]] = []
        self.answers: list[Callable[[str, str], Answer | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, time.time()))
                    fault = proxy.faults.popleft() if proxy.faults else None
                    answers = list(proxy.answers)
                answer = next((a for rule in answers if (a := rule(self.command, self.path)) is not None), None)
                if answer is not None:
                    # The proxy answers itself: the gateway never sees the request.
                    status, headers, payload = answer
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if proxy.latency:
                    time.sleep(proxy.latency)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if isinstance(fault, tuple) and fault[0] == "sleep":
                    time.sleep(fault[1])
                elif fault == "500":
                    payload = b'{"error": {"type": "api_error", "message": "injected gateway fault"}}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                data = proxy._rewritten(self.command, self.path, data)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _forward

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client killed mid-request (the fault suite does that) is not news

        self.server = Server(("127.0.0.1", port), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, *faults: object) -> None:
        with self.lock:
            self.faults.extend(faults)

    def rewrite(self, rule: Callable[[str, str, dict], dict | None]) -> Callable[[], None]:
        """Pass each JSON answer through rule(method, path, body): a new body, or None to
        leave it. Returns what removes the rule."""
        with self.lock:
            self.rules.append(rule)

        def remove() -> None:
            with self.lock:
                self.rules.remove(rule)

        return remove

    def answer(self, rule: Callable[[str, str], Answer | None]) -> Callable[[], None]:
        """Answer a request in the gateway's place when rule(method, path) gives (status, headers,
        body); None forwards it. Returns what removes the rule."""
        with self.lock:
            self.answers.append(rule)

        def remove() -> None:
            with self.lock:
                self.answers.remove(rule)

        return remove

    def _rewritten(self, method: str, path: str, data: bytes) -> bytes:
        with self.lock:
            rules = list(self.rules)
        if not rules:
            return data
        try:
            body = json.loads(data)
        except ValueError:
            return data
        for rule in rules:
            changed = rule(method, path, body)
            if changed is not None:
                return json.dumps(changed).encode()
        return data

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
