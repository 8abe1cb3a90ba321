"""send_email: one message over SMTP, its delivery recorded by job id."""

import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from rideshare.db import get_db, utcnow
from rideshare.jobs.queue import Job
from rideshare.jobs.task import PermanentJobError, TransientJobError
from rideshare.mail.models import FAILED, RETRYING, SENDING, SENT, EmailDelivery


class SmtpReplyError(Exception):
    """A non-success SMTP reply; 4xx is worth a retry, 5xx is not."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code


def build_message(data: dict[str, Any], sender: str) -> EmailMessage:
    """A text message with an HTML alternative when data has html."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = data["to"]
    msg["Subject"] = data["subject"]
    msg["Message-ID"] = make_msgid(domain="rideshare.local")
    msg.set_content(data.get("text") or "")
    if data.get("html"):
        msg.add_alternative(data["html"], subtype="html")
    return msg


def _expect(reply: tuple[int, bytes], ok: tuple[int, ...]) -> str:
    code, text = reply
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    if code not in ok:
        raise SmtpReplyError(code, decoded)
    return f"{code} {decoded}"


def _deliver(msg: EmailMessage) -> str:
    """Hand msg to the SMTP server; returns its reply to DATA."""
    cfg = current_app.config
    smtp = smtplib.SMTP(cfg["SMTP_HOST"], cfg["SMTP_PORT"], timeout=cfg["SMTP_TIMEOUT"])
    try:
        smtp.ehlo()
        if cfg["SMTP_STARTTLS"]:
            smtp.starttls()
            smtp.ehlo()
        if cfg["SMTP_USER"]:
            smtp.login(cfg["SMTP_USER"], cfg["SMTP_PASSWORD"])
        sender = msg["From"].addresses[0].addr_spec
        _expect(smtp.mail(sender), (250,))
        _expect(smtp.rcpt(msg["To"].addresses[0].addr_spec), (250, 251))
        reply = _expect(smtp.data(msg.as_bytes()), (250,))
    except BaseException:
        # No QUIT after a failure: it would wait on a server that may be stalled,
        # and its reply would hide the real error (a time limit, say).
        smtp.close()
        raise
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()  # the message was accepted; a rude goodbye changes nothing
    return reply


def _delivery(session: Session, job_id: str) -> EmailDelivery | None:
    """The delivery row of one email job."""
    return session.scalar(select(EmailDelivery).where(EmailDelivery.job_id == job_id))


def _record(job_id: str, **values: Any) -> EmailDelivery:
    with get_db().session() as session:
        delivery = _delivery(session, job_id)
        for name, value in values.items():
            setattr(delivery, name, value)
        return delivery


def send_email(job: Job) -> dict[str, Any]:
    """Send the job's message once; a message the server already accepted is not sent again."""
    data = job.data
    with get_db().session() as session:
        delivery = _delivery(session, job.id)
        if delivery is None:
            delivery = EmailDelivery(job_id=job.id, to_addr=data["to"], subject=data["subject"][:200], attempts=0)
            session.add(delivery)
        if delivery.status == SENT:
            return {"messageId": delivery.message_id, "reply": delivery.last_reply, "duplicate": True}
        delivery.status = SENDING
        delivery.attempts += 1
    msg = build_message(data, current_app.config["MAIL_FROM"])
    try:
        reply = _deliver(msg)
    except SmtpReplyError as exc:
        if 400 <= exc.code < 500:
            _record(job.id, status=RETRYING, last_reply=str(exc)[:500])
            raise TransientJobError(f"SMTP {exc}") from exc
        _record(job.id, status=FAILED, last_reply=str(exc)[:500])
        raise PermanentJobError(f"SMTP {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        # Refused at greeting, STARTTLS or login.
        transient = 400 <= exc.smtp_code < 500
        _record(job.id, status=RETRYING if transient else FAILED, last_reply=str(exc)[:500])
        error = TransientJobError if transient else PermanentJobError
        raise error(f"SMTP {exc.smtp_code} {exc.smtp_error!r}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        # Connection refused, dropped or timed out: the server never took the message.
        _record(job.id, status=RETRYING, last_reply=f"connection: {exc}"[:500])
        raise TransientJobError(f"SMTP connection: {exc}") from exc
    _record(job.id, status=SENT, last_reply=reply[:500], message_id=msg["Message-ID"], sent_at=utcnow())
    return {"messageId": msg["Message-ID"], "reply": reply}


def mark_delivery_failed(job: Job, reason: str) -> None:
    """Record that a delivery has failed for good."""
    with get_db().session() as session:
        delivery = _delivery(session, job.id)
        if delivery is not None and delivery.status != SENT:
            delivery.status = FAILED
            delivery.last_reply = reason[:500]
