"""The email queue's whole policy: read by the API to queue mail and by the worker to send it."""

import smtplib

from sqlalchemy.exc import OperationalError

from jobqueue import Backoff, QueuePolicy
from rideshare.mail.schemas import EmailJobSchema
from rideshare.mail.service import mark_delivery_failed, smtp_back_pressure

EMAIL_QUEUE = QueuePolicy(
    name="email",
    task="email.send",
    schema=EmailJobSchema,
    attempts=3,
    backoff=Backoff("exponential", 2000),
    # SMTP 4xx replies and dropped connections raise TransientJobError; 5xx is permanent.
    # OperationalError: the database that records deliveries is unreachable.
    retry_on=(smtplib.SMTPServerDisconnected, OperationalError),
    # A 421, or a 4xx that says it is a rate limit, asks the sender to wait: the whole queue
    # takes no job for SMTP_BACK_PRESSURE_MS (30 s) and the message keeps its attempt.
    back_pressure=smtp_back_pressure,
    priorities=10,
    on_final_failure=mark_delivery_failed,
)
