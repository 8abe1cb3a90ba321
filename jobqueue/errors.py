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
