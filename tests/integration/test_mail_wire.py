"""Mail as a strict SMTP server sees it: CRLF lines within RFC 5322's limits, whatever the name or body.

The stack's SMTP server and devstack's sink are aiosmtpd with its defaults, which
refuse a line over 1,000 octets ("500 Line too long"), as strict servers do. A
message sent with bare LF is a single endless line to them.
"""

import secrets
import smtplib
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from devstack.processes import free_port, start_python, stop, wait_for_port
from rideshare.jobs import add_email_job
from rideshare.mail.service import SMTP_POLICY, build_message

pytestmark = pytest.mark.integration

LONG_NAME = ("Maximiliana-Theodora " * 4 + "von Hohenzollern-Sigmaringen-Wittelsbach")[:100]  # 100 characters
NON_ASCII_NAME = "Zoë Ørsted-Łukasiewicz 山田太郎 Ñandú"
BIG_TEXT = "".join(f"line {i}: " + "ride receipt " * 6 + "\n" for i in range(260))  # ~22 KB
BIG_LINE = "x" * 20_000  # one 20 KB line: must be broken for the wire, and come back whole


def address() -> str:
    return f"rider-{secrets.token_hex(4)}@example.com"


def parts_of(raw: bytes) -> tuple[str, dict[str, str]]:
    """The decoded subject and each leaf part's decoded text, read as a mail client would."""
    msg = message_from_bytes(raw, policy=policy.default)
    parts = {
        part.get_content_type(): part.get_content().replace("\r\n", "\n")
        for part in msg.walk()
        if not part.is_multipart()
    }
    return str(msg["Subject"]), parts


def received_raw(stack, to: str) -> bytes:
    [received] = stack.services.smtp.handler.messages_to(to)
    return received.message.as_bytes(policy=policy.compat32)


def assert_wire_safe(raw: bytes) -> None:
    """CRLF only, 7-bit, and every line within RFC 5322's 78-character recommendation."""
    assert b"\n" not in raw.replace(b"\r\n", b""), "a bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "a bare CR"
    assert max(raw) < 128
    longest = max(len(line) for line in raw.split(b"\r\n"))
    assert longest <= 78, longest


@pytest.mark.parametrize(
    ("text", "html"),
    [("Hi Ann", None), (BIG_TEXT, None), (BIG_LINE, BIG_LINE), (f"Hi {NON_ASCII_NAME}", f"<h1>{NON_ASCII_NAME}</h1>")],
    ids=["short", "22kb-lines", "20kb-one-line", "non-ascii"],
)
def test_a_built_message_is_wire_safe_and_reads_back_whole(text, html):
    data = {"to": "ann@example.com", "subject": f"Welcome {LONG_NAME}!", "text": text}
    if html:
        data["html"] = html
    raw = build_message(data, "Rideshare <noreply@rideshare.local>").as_bytes(policy=SMTP_POLICY)
    assert_wire_safe(raw)
    subject, parts = parts_of(raw)
    assert subject == f"Welcome {LONG_NAME}!"
    assert parts["text/plain"].rstrip("\n") == text.rstrip("\n")
    if html:
        assert parts["text/html"].rstrip("\n") == html


@pytest.mark.parametrize("name", [LONG_NAME, NON_ASCII_NAME], ids=["100-characters", "non-ascii"])
def test_a_welcome_email_reaches_a_strict_smtp_server_intact(client, stack, name):
    assert len(LONG_NAME) == 100
    to = address()
    response = client.post("/send-welcome-email", json={"email": to, "name": name})
    assert response.status_code == 202, response.get_data(as_text=True)
    job = stack.wait_for_job(response.json["jobId"])
    assert job.state == "completed", job.failed_reason
    subject, parts = parts_of(received_raw(stack, to))
    assert subject == f"Welcome {name}!"
    assert f"Hi {name}, welcome" in parts["text/plain"]
    assert f"<h1>Welcome {name}!</h1>" in parts["text/html"]


def test_a_20_kb_body_reaches_a_strict_smtp_server_intact(app, stack):
    """20 KB on one line (job data is bounded at 32 KiB, so text and html stay under it together)."""
    to = address()
    html = "<p>" + "ride receipt " * 500 + "</p>"
    job = add_email_job({"to": to, "subject": "Your rides this year", "text": BIG_LINE, "html": html})
    job = stack.wait_for_job(job.id)
    assert job.state == "completed", job.failed_reason
    _, parts = parts_of(received_raw(stack, to))
    assert parts["text/plain"].rstrip("\n") == BIG_LINE
    assert parts["text/html"].rstrip("\n") == html


def test_devstack_sink_stays_strict_and_keeps_what_it_accepts(tmp_path: Path):
    """The dev sink refuses what strict servers refuse (a bare-LF message over 1 KB), and takes ours."""
    port = free_port()
    maildir = tmp_path / "mail"
    sink = start_python(
        "devstack.smtp_sink", ["--port", str(port), "--maildir", str(maildir)], log=tmp_path / "sink.log"
    )
    try:
        wait_for_port("127.0.0.1", port, proc=sink)
        bare_lf = b"From: a@example.com\nTo: b@example.com\nSubject: x\n\n" + b"hello world\n" * 200
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.sendmail("a@example.com", ["b@example.com"], bare_lf)
            assert refused.value.smtp_code == 500
        msg = build_message(
            {"to": "b@example.com", "subject": f"Welcome {NON_ASCII_NAME}!", "text": BIG_LINE, "html": BIG_TEXT},
            "noreply@rideshare.local",
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("noreply@rideshare.local", ["b@example.com"], msg.as_bytes(policy=SMTP_POLICY))
    finally:
        stop(sink)
    [saved] = list(maildir.glob("*.eml"))
    raw = saved.read_bytes()
    subject, parts = parts_of(raw)
    assert subject == f"Welcome {NON_ASCII_NAME}!"
    assert parts["text/plain"].rstrip("\n") == BIG_LINE
    assert parts["text/html"].rstrip("\n") == BIG_TEXT.rstrip("\n")
