"""An SMTP sink on 127.0.0.1 that accepts every message and prints a line for each.

python -m devstack.smtp_sink --port 1025 [--maildir var/mail]
"""

import argparse
import asyncio
import email
import json
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class SinkHandler:
    """Keeps each accepted message as an .eml file and logs it."""

    def __init__(self, maildir: Path | None) -> None:
        self.maildir = maildir

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content)
        if self.maildir is not None:
            self.maildir.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns()}.eml"
            (self.maildir / name).write_bytes(envelope.content)
        line = {"event": "mail.received", "to": envelope.rcpt_tos, "subject": msg["Subject"]}
        print(json.dumps(line), flush=True)
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, default=None)
    args = parser.parse_args()
    # aiosmtpd's defaults on purpose: like strict servers, it refuses a line over 1,000
    # octets ("500 Line too long"), which is what a bare-LF message looks like; a sink
    # that took anything would hide mail that real servers refuse
    # (tests/integration/test_mail_wire.py checks it stays so).
    controller = Controller(SinkHandler(args.maildir), hostname=args.host, port=args.port)
    controller.start()
    print(json.dumps({"event": "smtp_sink.started", "host": args.host, "port": args.port}), flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
