"""send_email: one message over SMTP, its delivery recorded by job id.

A delivery row is fenced by the job delivery's token: the attempt claims the row
(email_deliveries.owner_token) and its later writes land only while the row still
names that token, so a worker frozen past its lease cannot mark a message that a
newer delivery is sending, or has sent, as retrying or failed.
"""

import contextlib
import email.headerregistry
import email.policy
import functools
import re
import smtplib
import socket
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from jobqueue import Job, PermanentJobError, StaleDelivery, TransientJobError
from jobqueue.deadline import interruptible, job_time_left
from rideshare import telemetry
from rideshare.db import get_db, utcnow
from rideshare.jobs.progress import log_line, report_step, stop_if_cancelled
from rideshare.mail.models import FAILED, RETRYING, SENDING, SENT, EmailDelivery


class SmtpReplyError(Exception):
    """A non-success SMTP reply; 4xx is worth a retry, 5xx is not."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


# An SMTP reply that asks the sender, not this message, to wait: 421 (the server is
# closing the channel: busy, shutting down, too many connections), or any 4xx whose text
# says it is a rate limit. Every message goes through the same server, so the whole
# email queue waits (EMAIL_QUEUE.back_pressure) and the message keeps its attempt.
# Another 4xx (greylisting's 451, a busy mailbox's 450) is this message's: it is retried
# after its own backoff, and the queue goes on.
SLOW_DOWN_TEXT = re.compile(r"too many|\brate\b|\brate.?limit|throttl", re.IGNORECASE)
SMTP_BACK_PRESSURE_MS = 30_000


def asks_to_slow_down(code: int, text: str) -> bool:
    """Whether an SMTP reply asks the client to send nothing for a while (421, or a 4xx rate limit)."""
    return code == 421 or (400 <= code < 500 and SLOW_DOWN_TEXT.search(text) is not None)


def _smtp_reply(exc: BaseException) -> tuple[int, str] | None:
    """The SMTP reply behind exc (or behind the job error send_email raised from it), if any."""
    for error in (exc, exc.__cause__):
        if isinstance(error, SmtpReplyError):
            return error.code, error.text
        if isinstance(error, smtplib.SMTPResponseException):
            text = error.smtp_error
            return error.smtp_code, text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return None


def smtp_back_pressure(exc: BaseException) -> int | None:
    """How long (ms) the email queue takes no job after exc: SMTP_BACK_PRESSURE_MS if its reply asks to slow down."""
    reply = _smtp_reply(exc)
    if reply is None or not asks_to_slow_down(*reply):
        return None
    if not has_app_context():
        return SMTP_BACK_PRESSURE_MS
    return int(current_app.config.get("SMTP_BACK_PRESSURE_MS") or SMTP_BACK_PRESSURE_MS)


# What goes over SMTP: CRLF line endings (bare LF is refused by strict servers, and is
# what SMTP smuggling exploits), headers folded at 78 characters with non-ASCII text
# as RFC 2047 encoded words, and 7-bit bodies: text that is not short ASCII lines is
# sent quoted-printable or base64, so no line comes near the 998-octet limit of
# RFC 5322 and no 8BITMIME support is assumed of the server.
class _HeaderClasses(email.headerregistry.HeaderRegistry):
    """The standard header registry, but each header's class is made once, not per header set."""

    @functools.cache  # noqa: B019 - one registry for the process's life
    def __getitem__(self, name: str) -> type:
        return super().__getitem__(name)


SMTP_POLICY = email.policy.SMTP.clone(cte_type="7bit", header_factory=_HeaderClasses())


def build_message(data: dict[str, Any], sender: str) -> EmailMessage:
    """A text message with an HTML alternative when data has html, ready for SMTP as bytes."""
    msg = EmailMessage(policy=SMTP_POLICY)
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


@functools.cache
def _local_hostname() -> str:
    """The name given in EHLO, looked up once per process (smtplib would resolve it per connection)."""
    return socket.getfqdn()


# A connection is reused for this long at most between messages: servers drop idle
# clients (Postfix after 300 s), and a dropped one is only found out on the next use.
SMTP_IDLE_REUSE_S = 30.0


class _Connection(threading.local):
    """This thread's open SMTP connection, kept between messages (one per pool thread or process)."""

    smtp: smtplib.SMTP | None = None
    key: tuple[Any, ...] = ()
    sent = 0
    last_used = 0.0

    def take(self, key: tuple[Any, ...], max_messages: int) -> smtplib.SMTP | None:
        """The kept connection if it may carry another message to the same server, else None."""
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return None
        if self.key == key and self.sent < max_messages and time.monotonic() - self.last_used < SMTP_IDLE_REUSE_S:
            return smtp
        _quit(smtp)
        return None

    def keep(self, smtp: smtplib.SMTP, key: tuple[Any, ...], reused: bool) -> None:
        self.smtp, self.key, self.last_used = smtp, key, time.monotonic()
        self.sent = self.sent + 1 if reused else 1


_connection = _Connection()


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()  # a rude goodbye changes nothing


def _shutdown(smtp: smtplib.SMTP) -> None:
    """Break off whatever the connection waits on, from another thread (a cancel)."""
    sock = smtp.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _connect(cfg: Any, timeout: float) -> smtplib.SMTP:
    smtp = smtplib.SMTP(cfg["SMTP_HOST"], cfg["SMTP_PORT"], local_hostname=_local_hostname(), timeout=timeout)
    try:
        smtp.ehlo()
        if cfg["SMTP_STARTTLS"]:
            smtp.starttls()
            smtp.ehlo()
        if cfg["SMTP_USER"]:
            smtp.login(cfg["SMTP_USER"], cfg["SMTP_PASSWORD"])
    except BaseException:
        smtp.close()
        raise
    return smtp


def _deliver(msg: EmailMessage) -> str:
    """Hand msg to the SMTP server; returns its reply to DATA.

    The connection (with its STARTTLS and login) is kept for the thread's next
    message, up to SMTP_MAX_MESSAGES_PER_CONNECTION; a kept connection that the
    server has closed meanwhile is replaced before anything is sent.
    """
    cfg = current_app.config
    timeout = cfg["SMTP_TIMEOUT"]
    left = job_time_left()
    if left is not None:
        # In a pool thread the job's timeout lands only once a socket call returns:
        # wait on the server no longer than the job has left (plus a moment, so the
        # job's own timeout, not the socket's, names the failure).
        timeout = min(timeout, left + 0.5)
    key = (cfg["SMTP_HOST"], cfg["SMTP_PORT"], cfg["SMTP_USER"], cfg["SMTP_STARTTLS"])
    sender = msg["From"].addresses[0].addr_spec
    recipient = msg["To"].addresses[0].addr_spec
    smtp = _connection.take(key, cfg["SMTP_MAX_MESSAGES_PER_CONNECTION"])
    reused = smtp is not None
    if smtp is None:
        smtp = _connect(cfg, timeout)
    # A cancel of this job breaks off a wait on the server (jobqueue.deadline.interruptible):
    # the socket is shut down, the wait raises, and the job ends cancelled.
    current = [smtp]
    with interruptible(lambda: _shutdown(current[0])):
        try:
            smtp.sock.settimeout(timeout)
            try:
                _expect(smtp.mail(sender), (250,))
            except (smtplib.SMTPServerDisconnected, OSError, SmtpReplyError) as exc:
                if not reused or (isinstance(exc, SmtpReplyError) and exc.code != 421):
                    raise
                # The kept connection was closed by the server; nothing was sent on it.
                smtp.close()
                smtp, reused = _connect(cfg, timeout), False
                current[0] = smtp
                _expect(smtp.mail(sender), (250,))
            _expect(smtp.rcpt(recipient), (250, 251))
            reply = _expect(smtp.data(msg.as_bytes(policy=SMTP_POLICY)), (250,))
        except BaseException:
            # No QUIT after a failure: it would wait on a server that may be stalled,
            # and its reply would hide the real error (a time limit, say).
            smtp.close()
            raise
    _connection.keep(smtp, key, reused)
    return reply


# Plain SQL statements on a connection, not the ORM: a job's two statements are its
# only SQL, and a Session's unit of work would cost more CPU than the statements.
DELIVERIES = EmailDelivery.__table__


# Who may write a delivery row. A delivery that the server accepted is a fact,
# whichever delivery sent it: the first one is recorded, and nothing moves a sent
# row again. Every other write needs the row to still name the writer's token, or
# (CLAIM: an attempt's start, and the final-failure hook, whose delivery may have
# failed before it claimed) to name no newer one.
UNSENT, OWNED, CLAIM = "unsent", "owned", "claim"


def _token(job: Job) -> int:
    """The delivery's fencing token, as the row stores it."""
    return int(job.token)


@functools.cache
def _update(columns: tuple[str, ...], guard: str) -> Any:
    """The UPDATE of a delivery row that sets columns, built once per shape (values are bound)."""
    owner = DELIVERIES.c.owner_token
    where = [DELIVERIES.c.job_id == bindparam("job_id_"), DELIVERIES.c.status != SENT]
    if guard == OWNED:
        where.append(owner == bindparam("token_"))
    elif guard == CLAIM:
        where.append(or_(owner.is_(None), owner <= bindparam("token_")))
    return update(DELIVERIES).where(*where).values({c: bindparam(c) for c in (*columns, "updated_at")})


@functools.cache
def _upsert(dialect: str) -> Any:
    """The upsert that opens an attempt and claims the row, built once per dialect (values are bound)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(DELIVERIES).values(
        job_id=bindparam("job_id"),
        to_addr=bindparam("to_addr"),
        subject=bindparam("subject"),
        status=SENDING,
        attempts=1,
        owner_token=bindparam("token"),
        updated_at=bindparam("now"),
    )
    owner = DELIVERIES.c.owner_token
    return stmt.on_conflict_do_update(
        index_elements=[DELIVERIES.c.job_id],
        set_={
            "status": SENDING,
            "attempts": DELIVERIES.c.attempts + 1,
            "owner_token": stmt.excluded.owner_token,
            "updated_at": stmt.excluded.updated_at,
        },
        # Neither a sent row nor one a newer delivery has claimed.
        where=(DELIVERIES.c.status != SENT) & or_(owner.is_(None), owner <= stmt.excluded.owner_token),
    ).returning(DELIVERIES.c.id)


def _record(job: Job, guard: str, **values: Any) -> None:
    """Set fields of a job's delivery row, if guard lets this delivery write it: one UPDATE."""
    if guard == CLAIM:
        # The claim is kept, so no older delivery writes over what this one recorded.
        values["owner_token"] = _token(job)
    params = {**values, "job_id_": job.id, "updated_at": utcnow()}
    if guard != UNSENT:
        params["token_"] = _token(job)
    with get_db().connection() as conn:
        conn.execute(_update(tuple(sorted(values)), guard), params)


def _begin_attempt(job: Job) -> Any:
    """Mark the job's delivery as sending, claimed by this delivery (one upsert); the row if it was already sent.

    None when this attempt may send; StaleDelivery when a newer delivery has claimed the row.
    """
    data = job.data
    with get_db().connection() as conn:
        params = {
            "job_id": job.id,
            "to_addr": data["to"],
            "subject": data["subject"][:200],
            "token": _token(job),
            "now": utcnow(),
        }
        if conn.execute(_upsert(conn.dialect.name), params).first() is not None:
            return None
        # The upsert left the row alone: sent (answer as the first delivery did), or a newer delivery's.
        row = conn.execute(select(DELIVERIES).where(DELIVERIES.c.job_id == job.id)).first()
    if row.status == SENT:
        return row
    raise StaleDelivery(f"email job {job.id}: delivery {job.token} is stale, delivery {row.owner_token} owns it")


def send_email(job: Job) -> dict[str, Any]:
    """Send the job's message once; a message the server already accepted is not sent again.

    The job's progress shows the server's reply, its log a refusal; never the message.
    """
    data = job.data
    stop_if_cancelled(job)  # a check point before anything is claimed or sent
    sent = _begin_attempt(job)
    if sent is not None:
        return {"messageId": sent.message_id, "reply": sent.last_reply, "duplicate": True}
    cfg = current_app.config
    msg = build_message(data, cfg["MAIL_FROM"])
    try:
        with telemetry.client_span("smtp send", {"server.address": cfg["SMTP_HOST"], "server.port": cfg["SMTP_PORT"]}):
            reply = _deliver(msg)
    except SmtpReplyError as exc:
        log_line(job, f"SMTP {exc}"[:500])
        # 4xx: worth another try; one that asks to slow down (asks_to_slow_down) pauses the
        # whole queue instead of spending the attempt (EMAIL_QUEUE.back_pressure).
        if 400 <= exc.code < 500:
            _record(job, OWNED, status=RETRYING, last_reply=str(exc)[:500])
            raise TransientJobError(f"SMTP {exc}") from exc
        _record(job, OWNED, status=FAILED, last_reply=str(exc)[:500])
        raise PermanentJobError(f"SMTP {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        # Refused at greeting, STARTTLS or login.
        log_line(job, f"SMTP {exc.smtp_code} {exc.smtp_error!r}"[:500])
        transient = 400 <= exc.smtp_code < 500
        _record(job, OWNED, status=RETRYING if transient else FAILED, last_reply=str(exc)[:500])
        error = TransientJobError if transient else PermanentJobError
        raise error(f"SMTP {exc.smtp_code} {exc.smtp_error!r}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        # Connection refused, dropped or timed out: the server never took the message.
        log_line(job, f"SMTP connection: {exc}"[:500])
        _record(job, OWNED, status=RETRYING, last_reply=f"connection: {exc}"[:500])
        raise TransientJobError(f"SMTP connection: {exc}") from exc
    # Recorded even if a newer delivery claimed the row meanwhile: this message did go
    # out, and a row left retrying would have it sent again. A row already sent keeps
    # the first message's id.
    _record(job, UNSENT, status=SENT, last_reply=reply[:500], message_id=msg["Message-ID"], sent_at=utcnow())
    report_step(job, "sent", reply=reply[:200])
    return {"messageId": msg["Message-ID"], "reply": reply}


def mark_delivery_failed(job: Job, reason: str) -> None:
    """Record that a delivery has failed for good (a sent one stays sent, a newer delivery's row is left alone)."""
    _record(job, CLAIM, status=FAILED, last_reply=reason[:500])
