"""The payment and email queues' back_pressure: which gateway errors pause the whole queue, and for how long."""

import smtplib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import stripe
from flask import Flask

from jobqueue import PermanentJobError, RateLimited, TransientJobError
from rideshare.mail.queue import EMAIL_QUEUE
from rideshare.mail.service import SMTP_BACK_PRESSURE_MS, SmtpReplyError, asks_to_slow_down, smtp_back_pressure
from rideshare.payments.hooks import gateway_back_pressure, retry_after_ms
from rideshare.payments.queue import PAYMENT_QUEUE

BODY = '{"error": {"type": "rate_limit_error", "message": "Too many requests"}}'


def rate_limit(headers: dict[str, str] | None = None) -> stripe.RateLimitError:
    return stripe.RateLimitError("Too many requests", BODY, 429, None, headers)


@pytest.mark.parametrize(
    ("headers", "ms"),
    [
        ({"Retry-After": "3"}, 3_000),
        ({"retry-after": "0.25"}, 250),  # any case, and fractions of a second
        ({}, 1_000),  # none: a second
        (None, 1_000),
        ({"Retry-After": "soon"}, 1_000),  # unreadable: a second
        ({"Retry-After": "nan"}, 1_000),
        ({"Retry-After": "3600"}, 60_000),  # an hour asked: a minute at most
        ({"Retry-After": "0"}, 1),  # at once: the least pause there is
        ({"Retry-After": "-5"}, 1),
    ],
)
def test_stripe_rate_limit_pauses_the_payment_queue_for_its_retry_after(headers, ms):
    assert gateway_back_pressure(rate_limit(headers)) == ms
    assert PAYMENT_QUEUE.pause_for(rate_limit(headers)) == ms


def test_retry_after_as_an_http_date():
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_ms({"Retry-After": later}, 1_000, 60_000, now=now) == 7_000
    past = format_datetime(now - timedelta(seconds=7), usegmt=True)
    assert retry_after_ms({"Retry-After": past}, 1_000, 60_000, now=now) == 1


@pytest.mark.parametrize(
    "exc",
    [
        stripe.APIError("gateway 500", http_status=500),
        stripe.APIConnectionError("connection reset"),
        stripe.CardError("declined", None, "card_declined", http_status=402),
        stripe.InvalidRequestError("no such intent", None, http_status=400),
        ValueError("not from the SDK"),
        TransientJobError("429 in the message text is not a 429"),
    ],
)
def test_other_errors_are_not_back_pressure(exc):
    assert gateway_back_pressure(exc) is None
    assert PAYMENT_QUEUE.pause_for(exc) is None


def test_the_payment_queue_still_retries_5xx_and_fails_a_decline():
    assert PAYMENT_QUEUE.is_retryable(stripe.APIError("gateway 500", http_status=500))
    assert not PAYMENT_QUEUE.is_retryable(stripe.CardError("declined", None, "card_declined", http_status=402))
    # A task's own RateLimited pauses any queue for what it names.
    assert PAYMENT_QUEUE.pause_for(RateLimited(2_500)) == 2_500


@pytest.mark.parametrize(
    ("code", "text", "slow_down"),
    [
        (421, "4.3.2 Service shutting down", True),  # the server closes the channel: all mail waits
        (421, "busy", True),
        (451, "4.7.1 Rate limit exceeded, try again later", True),
        (450, "4.7.0 Too many messages from your IP", True),
        (452, "4.3.1 Throttling: slow down", True),
        (454, "Throttling failure: Maximum sending rate exceeded", True),
        (451, "4.3.0 try again later", False),  # this message's trouble: its own backoff
        (451, "4.7.1 Greylisted, please retry", False),
        (450, "4.2.1 mailbox busy", False),
        (451, "4.3.0 could not generate the message", False),  # "rate" only inside a word
        (550, "5.7.1 rate limit: message refused", False),  # a 5xx is final, never a pause
        (554, "too many hops", False),
    ],
)
def test_which_smtp_replies_ask_the_queue_to_slow_down(code, text, slow_down):
    assert asks_to_slow_down(code, text) is slow_down
    expected = SMTP_BACK_PRESSURE_MS if slow_down else None
    assert smtp_back_pressure(SmtpReplyError(code, text)) == expected
    # As the email task raises it: a job error from the SMTP reply.
    wrapped = (TransientJobError if code < 500 else PermanentJobError)(f"SMTP {code} {text}")
    wrapped.__cause__ = SmtpReplyError(code, text)
    assert EMAIL_QUEUE.pause_for(wrapped) == expected


@pytest.mark.parametrize(
    ("exc", "ms"),
    [
        (smtplib.SMTPConnectError(421, b"4.7.0 Too many connections"), SMTP_BACK_PRESSURE_MS),  # at the greeting
        (smtplib.SMTPAuthenticationError(454, b"4.7.0 Too many login attempts"), SMTP_BACK_PRESSURE_MS),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), None),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), None),
        (ConnectionRefusedError(111, "refused"), None),
    ],
)
def test_smtp_errors_before_the_message(exc, ms):
    assert smtp_back_pressure(exc) == ms


def test_the_email_pause_is_the_apps_setting():
    app = Flask("back_pressure")
    app.config["SMTP_BACK_PRESSURE_MS"] = 4_000
    with app.app_context():
        assert smtp_back_pressure(SmtpReplyError(421, "busy")) == 4_000
        assert smtp_back_pressure(SmtpReplyError(451, "4.3.0 try again later")) is None
