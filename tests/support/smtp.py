"""A real SMTP server on loopback (aiosmtpd) whose replies a test can script."""

import asyncio
import email
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Received:
    rcpt_tos: list[str]
    message: Message
    at: float
    peer: Any = None  # the client's (address, port): one per SMTP connection


@dataclass
class ScriptedHandler:
    """Accepts mail, unless a scripted reply or stall is queued for a recipient."""

    received: list[Received] = field(default_factory=list)
    # recipient -> queued replies ("451 ..." or "550 ...", ("stall", seconds), or ("hang up",):
    # accept, then close the connection as a server does with an idle client); empty: accept
    script: dict[str, deque] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, rcpt: str, *replies: Any) -> None:
        """Answer the next deliveries to rcpt with these replies, in order."""
        with self.lock:
            self.script.setdefault(rcpt.lower(), deque()).extend(replies)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0].lower()
        with self.lock:
            queued = self.script.get(rcpt)
            reply = queued.popleft() if queued else None
        if isinstance(reply, tuple) and reply[0] == "stall":
            await asyncio.sleep(reply[1])
            reply = None
        if isinstance(reply, tuple) and reply[0] == "hang up":
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
            reply = None
        if reply is not None:
            return reply
        with self.lock:
            self.received.append(
                Received(list(envelope.rcpt_tos), email.message_from_bytes(envelope.content), time.time(), session.peer)
            )
        return "250 OK queued"

    def messages_to(self, rcpt: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if rcpt.lower() in (t.lower() for t in r.rcpt_tos)]


class SMTPServer:
    """aiosmtpd in a background thread of the test process."""

    def __init__(self, port: int) -> None:
        self.handler = ScriptedHandler()
        self.port = port
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)

    def __enter__(self) -> "SMTPServer":
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
