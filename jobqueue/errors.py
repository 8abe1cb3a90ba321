"""The engine's errors: what a job raises to steer its retries, and what enqueueing raises."""

from typing import Any


class PermanentJobError(Exception):
    """An error that retrying cannot fix: the job fails at once."""


class TransientJobError(Exception):
    """An error worth another attempt after the backoff."""


class JobTimeout(Exception):
    """The job ran past its timeout option."""


class QueueUnavailable(RuntimeError):
    """The broker or the job store could not take the job; nothing was stored."""


class InvalidJobData(ValueError):
    """Job data that its queue's schema rejects; .errors names each bad field."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(f"invalid job data: {errors}")
        self.errors = errors


class CancelRefused(Exception):
    """A queue's on_cancel hook refuses a cancel (the job's work can no longer be undone)."""


class JobCancelled(Exception):
    """The job was cancelled while it ran (job.raise_if_cancelled): it ends cancelled, never retried."""


class Snooze(Exception):  # noqa: N818 - named as oban's and River's: the task asks, it is not an error
    """Raised by a task: run the job again after seconds, without spending an attempt.

    For a job waiting on something outside (a PaymentIntent still processing). A job
    snoozed more times than its queue's cap (QueuePolicy.max_snoozes) fails instead.
    """

    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"snoozed for {seconds:g} s")
        self.seconds = seconds


class RateLimited(Exception):  # noqa: N818 - as BullMQ's Worker.RateLimitError: a signal, not a failure
    """Raised by a task (or mapped from a gateway error by the policy's back_pressure): the
    gateway asked to slow down. The whole queue takes no job for ms (BullMQ's
    worker.rateLimit(ms)), and this job goes back to waiting without spending an attempt."""

    def __init__(self, ms: int, reason: str = "") -> None:
        super().__init__(reason or f"rate limited for {ms} ms")
        self.ms = max(int(ms), 1)
