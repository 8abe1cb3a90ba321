"""A queue's whole policy, declared once beside its domain and read by both the API and the worker.

    PAYMENT_QUEUE = QueuePolicy(
        name="payment",
        task="payment.charge",
        schema=PaymentJobSchema,
        attempts=5,
        backoff=Backoff("exponential", 5000),
        retry_on=(is_transient_gateway_error, OperationalError),
        on_final_failure=payment_failed_for_good,
    )

``retry_on`` holds exception classes (or tuples of them) and predicates ``(exc) ->
bool``; hooks are callables. All are checked when the policy is declared, so a
rename fails at import, not when a job first fails. A predicate or hook that needs
a heavy module (the Stripe SDK) imports it inside, so enqueueing a job never
imports what runs it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from marshmallow import Schema

from jobqueue.errors import JobTimeout, PermanentJobError, RateLimited, TransientJobError
from jobqueue.options import Backoff, JobOptions

Hook = Callable[..., Any] | None
RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def _is_error_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


@dataclass(frozen=True, eq=False)
class QueuePolicy:
    """Everything that decides how one queue's jobs are queued, run, retried and ended."""

    name: str
    task: str  # the Celery task name that runs the queue's jobs
    schema: type[Schema] | None = None  # the job data's schema, checked when a job is added
    attempts: int | None = None  # None: the app's JOB_RETRY_ATTEMPTS
    backoff: Backoff = Backoff()  # a delay of None: the app's JOB_RETRY_DELAY
    timeout: int | None = None  # ms; None: the app's JOB_TIMEOUT
    # What earns another attempt: exception classes (or tuples of them) and predicates
    # (exc) -> bool; every other error fails the job at once.
    retry_on: tuple[RetryOn, ...] = ()
    # Priority levels the queue offers (priority option 0 .. priorities-1); the fetch
    # takes the lowest number first, then the oldest.
    priorities: int = 1
    # Data fields each job is tagged with for search (GET /admin/jobs?rideId=...).
    tags: tuple[str, ...] = ()
    # How often one job may snooze (raise Snooze) before it fails instead.
    max_snoozes: int = 100
    # How often one job may be sent back by the gateway's back-pressure (back_pressure,
    # RateLimited) before it fails instead: a gateway that answers 429 for ever fails it.
    max_rate_limits: int = 1000
    on_final_failure: Hook = None  # (job, reason): once, when a job has failed for good
    # (job, reason): before a job that has not finished is cancelled, so the domain can undo
    # or stop what the job would do (cancel a PaymentIntent); raising CancelRefused refuses
    # the cancel, and the job is left as it is.
    on_cancel: Hook = None
    # Whether a running job cancelled that does not stop at a check point is terminated by its
    # pool after a grace. A queue whose work must not be cut mid-call says False and stops
    # only at its check points (and on its on_cancel's terms).
    terminate_on_cancel: bool = True
    on_manual_retry: Hook = None  # (job, data): before an operator's retry requeues a failed job
    # (exc) -> ms | None: an error that says the gateway wants the whole queue to slow down
    # (Stripe's RateLimitError with Retry-After, SMTP 421): the queue takes no job for ms and
    # the job goes back to waiting without spending an attempt (a task can also raise
    # RateLimited(ms) itself).
    back_pressure: Hook = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entry in self.retry_on:
            parts = entry if isinstance(entry, tuple) else (entry,)
            if not all(_is_error_class(part) or (callable(part) and not isinstance(part, type)) for part in parts):
                raise TypeError(f"{self.name}: retry_on takes exception classes and predicates, not {entry!r}")
        for name in ("on_final_failure", "on_manual_retry", "on_cancel", "back_pressure"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise TypeError(f"{self.name}: {name} must be a callable, not {hook!r}")

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
    def _retry_rules(self) -> tuple[tuple[type[BaseException], ...], tuple[Callable[[BaseException], bool], ...]]:
        classes: list[type[BaseException]] = [TransientJobError, JobTimeout]
        predicates: list[Callable[[BaseException], bool]] = []
        for entry in self.retry_on:
            for part in entry if isinstance(entry, tuple) else (entry,):
                (classes if _is_error_class(part) else predicates).append(part)
        return tuple(classes), tuple(predicates)

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether exc earns another attempt (a PermanentJobError never does)."""
        if isinstance(exc, PermanentJobError):
            return False
        classes, predicates = self._retry_rules
        return isinstance(exc, classes) or any(predicate(exc) for predicate in predicates)

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The on_final_failure, on_manual_retry or on_cancel hook."""
        return getattr(self, name)

    def pause_for(self, exc: BaseException) -> int | None:
        """How long (ms) the whole queue must take no job after exc, or None (not back-pressure)."""
        if isinstance(exc, RateLimited):
            return exc.ms
        if self.back_pressure is None:
            return None
        ms = self.back_pressure(exc)
        return None if ms is None else max(int(ms), 1)
