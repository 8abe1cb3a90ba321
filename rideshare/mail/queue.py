"""The email queue's whole policy: read by the API to queue mail and by the worker to send it."""

import smtplib

from sqlalchemy.exc import OperationalError

from jobqueue import Backoff, QueuePolicy
from rideshare.mail.schemas import EmailJobSchema
from rideshare.mail.service import mark_delivery_failed

EMAIL_QUEUE = QueuePolicy(
    name="email",
    task="email.send",
    schema=EmailJobSchema,
    attempts=3,
    backoff=Backoff("exponential", 2000),
    # SMTP 4xx replies and dropped connections raise TransientJobError; 5xx is permanent.
    # OperationalError: the database that records deliveries is unreachable.
    retry_on=(smtplib.SMTPServerDisconnected, OperationalError),
    priorities=10,
    on_final_failure=mark_delivery_failed,
)
