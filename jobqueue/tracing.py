"""A job's trace context, kept in its record, and the span of each run: the OpenTelemetry API only.

The engine never sets up an SDK; the app does (or not). The engine looks once for an SDK
tracer provider, at its first traced call: without one, ``carrier()`` returns "" and
``job_span()`` a shared no-op context manager, after one global read. An app that sets its
provider after that calls ``refresh()``.

With one, ``JobQueue.prepare`` keeps the W3C trace context of the span that adds a job
(``carrier()``: the HTTP request, or the job that queues another) in the job's record, the
hash field ``trace`` (the outbox keeps it in its row until the relay adds the job). Each
run of the job (``JobTask``) is a CONSUMER span, ``job <queue>``, whose parent is that
context: the request, every attempt of its job (a retry, a stalled job taken again, a job
relayed from the outbox) and the calls those make are one trace.
"""

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode

_OFF = nullcontext()
_UNKNOWN: Any = object()
_found: Any = _UNKNOWN  # the engine's tracer, None while tracing is off, or not looked for yet


class TracedJob(Protocol):
    id: str
    trace: str


def tracer() -> trace.Tracer | None:
    """The engine's tracer when the app has set an SDK tracer provider; None while tracing is off."""
    found = _found
    return _look() if found is _UNKNOWN else found


def refresh() -> None:
    """Look for the tracer provider again (the app has just set one)."""
    global _found
    _found = _UNKNOWN


def _look() -> trace.Tracer | None:
    global _found
    provider = trace.get_tracer_provider()
    _found = None if isinstance(provider, ProxyTracerProvider | NoOpTracerProvider) else provider.get_tracer("jobqueue")
    return _found


def carrier() -> str:
    """The current span's trace context (traceparent, tracestate) as compact JSON; "" when there is none."""
    if tracer() is None or not trace.get_current_span().get_span_context().is_valid:
        return ""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return json.dumps(headers, separators=(",", ":")) if headers else ""


def job_span(job: TracedJob, queue: str, attempt: int) -> AbstractContextManager[Any]:
    """A CONSUMER span around one run of job, in the trace its record carries; a no-op while tracing is off."""
    found = tracer()
    if found is None:
        return _OFF
    return _run_span(found, job, queue, attempt)


@contextmanager
def _run_span(found: trace.Tracer, job: TracedJob, queue: str, attempt: int) -> Iterator[trace.Span]:
    parent = propagate.extract(_headers(job.trace)) if job.trace else None
    attributes = {
        "messaging.system": "jobqueue",
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": job.id,
        "jobqueue.attempt": attempt,
    }
    with found.start_as_current_span(
        f"job {queue}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            # The task base re-raises a retried job's error as Celery's Retry, raised from it:
            # both are recorded, so the span names the error and that it was retried.
            span.record_exception(exc)
            if exc.__cause__ is not None:
                span.record_exception(exc.__cause__)
            span.set_status(Status(StatusCode.ERROR, f"{exc.__class__.__name__}: {exc}"[:200]))
            raise


def _headers(text: str) -> dict[str, str]:
    """The stored carrier's headers; a field that is not one starts a new trace, never fails the job."""
    try:
        headers = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(headers, dict):
        return {}
    return {str(k): str(v) for k, v in headers.items()}
