"""A queue's whole policy, declared once beside its domain and read by both the API and the worker.

    PAYMENT_QUEUE = QueuePolicy(
        name="payment",
        task="payment.charge",
        schema=PaymentJobSchema,
        attempts=5,
        backoff=Backoff("exponential", 5000),
        retry_on=("shop.gateway:TRANSIENT_ERRORS", OperationalError),
        on_final_failure="shop.payments:payment_failed_for_good",
    )

Exceptions and hooks may be named as ``"module:attribute"`` strings: they are
imported on first use, in the worker, so enqueueing a job never imports what
runs it (the Stripe SDK, an SMTP client).
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from marshmallow import Schema

from jobqueue.errors import JobTimeout, PermanentJobError, TransientJobError
from jobqueue.options import Backoff, JobOptions

Hook = Callable[..., Any] | str | None


def resolve(target: Any) -> Any:
    """A "module:attribute" string imported, or the object itself."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True, eq=False)
class QueuePolicy:
    """Everything that decides how one queue's jobs are queued, run, retried and ended."""

    name: str
    task: str  # the Celery task name that runs the queue's jobs
    schema: type[Schema] | None = None  # the job data's schema, checked when a job is added
    attempts: int | None = None  # None: the app's JOB_RETRY_ATTEMPTS
    backoff: Backoff = Backoff()  # a delay of None: the app's JOB_RETRY_DELAY
    timeout: int | None = None  # ms; None: the app's JOB_TIMEOUT
    # Exceptions (classes, tuples, or "module:attr" names) that earn another attempt;
    # every other error fails the job at once.
    retry_on: tuple[Any, ...] = ()
    # Priority levels the queue offers (priority option 0 .. priorities-1); the fetch
    # takes the lowest number first, then the oldest.
    priorities: int = 1
    on_final_failure: Hook = None  # (job, reason): once, when a job has failed for good
    on_manual_retry: Hook = None  # (job, data): before an operator's retry requeues a failed job
    extra: dict[str, Any] = field(default_factory=dict)

    def defaults(self, attempts: int, delay: int, timeout: int) -> JobOptions:
        """This queue's job defaults, the app's settings filling what the policy leaves open."""
        return JobOptions(
            attempts=self.attempts or attempts,
            backoff=Backoff(self.backoff.type, self.backoff.delay or delay),
            timeout=self.timeout or timeout,
        )

    @cached_property
    def data_schema(self) -> Schema | None:
        """The schema, built once: a schema holds no state between validations."""
        return self.schema() if self.schema is not None else None

    @cached_property
    def retryable_errors(self) -> tuple[type[BaseException], ...]:
        found: list[type[BaseException]] = [TransientJobError, JobTimeout]
        for entry in self.retry_on:
            value = resolve(entry)
            found.extend(value if isinstance(value, tuple) else (value,))
        return tuple(found)

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether exc earns another attempt (a PermanentJobError never does)."""
        return not isinstance(exc, PermanentJobError) and isinstance(exc, self.retryable_errors)

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The on_final_failure or on_manual_retry hook, imported on first use."""
        return resolve(getattr(self, name))
