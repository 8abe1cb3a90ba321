"""OpenTelemetry traces: the SDK and the instrumentations, set up only when asked for.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or
``OTEL_TRACES_EXPORTER`` is set: then the API process traces its requests (Flask), SQL
(SQLAlchemy), Redis and HTTP calls (requests, which the Stripe client is given), and each
worker process its jobs (jobqueue.tracing) and their calls, exported over OTLP/HTTP
(``OTEL_TRACES_EXPORTER=console`` prints them). Service name: ``OTEL_SERVICE_NAME``, else
rideshare-api or rideshare-worker. When off, nothing is installed or instrumented.

A trace starts at a request, a job or a message sent (a SERVER, CONSUMER or PRODUCER span):
a client or internal span with no parent (a worker's heartbeat, its fetches, a relay's SQL)
is not sampled.
"""

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from celery import Celery, signals
from flask import Flask
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine

from jobqueue import tracing

if TYPE_CHECKING:  # the SDK is imported only once tracing starts
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

API_SERVICE = "rideshare-api"
WORKER_SERVICE = "rideshare-worker"
# Probes and scrapes, every few seconds: not worth a trace each (OTEL_PYTHON_FLASK_EXCLUDED_URLS overrides).
EXCLUDED_URLS = "healthz,readyz,metrics"
_OFF = nullcontext()
ENTRY_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER)


class _Tracing:
    """What this process set up: its provider, and the engine SQLAlchemy's instrumentation traces."""

    provider: "TracerProvider | None" = None
    engine: Engine | None = None


_state = _Tracing()


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (an OTLP endpoint, or an exporter other than none)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporter_names(environ)
    if exporters:
        return exporters != ["none"]
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    return [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]


def exporters_from_env(environ: Mapping[str, str] = os.environ) -> list["SpanExporter"]:
    """The exporters OTEL_TRACES_EXPORTER names (otlp, the default, or console)."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    found: list[SpanExporter] = []
    for name in _exporter_names(environ) or ["otlp"]:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            found.append(OTLPSpanExporter())  # OTEL_EXPORTER_OTLP_* configure it
        elif name == "console":
            found.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not one of otlp, console, none")
    return found


def entry_spans_sampler(inner: "Sampler") -> "Sampler":
    """A sampler that samples as inner does, but drops a client or internal span with no parent."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    # Defined here, like the other SDK parts, so a process with tracing off never imports the SDK.
    class EntrySpansSampler(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            has_parent = trace.get_current_span(parent_context).get_span_context().is_valid
            if not has_parent and kind not in ENTRY_KINDS:
                return SamplingResult(Decision.DROP)
            return inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"EntrySpans{{{inner.get_description()}}}"

    return EntrySpansSampler()


def start_tracing(service_name: str, processors: Sequence["SpanProcessor"] | None = None) -> "TracerProvider":
    """Set this process's tracer provider (once) and instrument Redis and requests.

    processors: where spans go; by default a batch processor per exporter of the environment.
    """
    if _state.provider is not None:
        return _state.provider
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    # The SDK read OTEL_TRACES_SAMPLER (parent-based, always on, by default); wrapped before any tracer takes it.
    provider.sampler = entry_spans_sampler(provider.sampler)
    for processor in processors if processors is not None else [BatchSpanProcessor(e) for e in exporters_from_env()]:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _state.provider = provider
    tracing.refresh()  # the engine may have looked before: jobs are traced from now on

    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    RedisInstrumentor().instrument()
    RequestsInstrumentor().instrument()
    return provider


def stop_tracing() -> None:
    """Undo the instrumentations and flush and shut down the provider (the API's provider stays set)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    if _state.provider is None:
        return
    for instrumentor in (RedisInstrumentor(), RequestsInstrumentor(), SQLAlchemyInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    _state.provider.shutdown()
    _state.provider = _state.engine = None


def trace_engine(engine: Engine | None) -> None:
    """Trace engine's SQL (the app's one engine; a rebuilt one replaces it); nothing while tracing is off."""
    if _state.provider is None or engine is None or engine is _state.engine:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    # The instrumentor is one per process and takes its engine when instrumenting.
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    # Its declared range stops short of SQLAlchemy 2.1, whose engine events it uses unchanged
    # (tests/integration/test_tracing.py sees the spans).
    instrumentor.instrument(engine=engine, skip_dep_check=True)
    _state.engine = engine


def trace_app(app: Flask) -> None:
    """Trace app's requests and its SQL."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    excluded = None if "OTEL_PYTHON_FLASK_EXCLUDED_URLS" in os.environ else EXCLUDED_URLS
    FlaskInstrumentor().instrument_app(app, excluded_urls=excluded)
    trace_engine(app.extensions["db"].engine)


def init_app(app: Flask, *, worker: bool) -> None:
    """create_app's step: nothing unless the environment asks for traces.

    The API process starts tracing at once. A worker starts it where its jobs run: in its
    own process on a threads or solo pool, and in each child of a prefork pool (the SDK's
    export thread and connections belong to the process that made them).
    """
    if not tracing_requested():
        return
    if not worker:
        start_tracing(API_SERVICE)
        trace_app(app)
        return
    celery: Celery = app.extensions["celery"]

    def in_worker(sender: Any = None, instance: Any = None, options: Any = None, **_: Any) -> None:
        from jobqueue.worker import worker_parallelism

        if instance is not None and instance.app is celery:
            pool, _most = worker_parallelism(options or {}, celery.conf)
            if pool != "prefork":
                _start_worker_tracing(app)

    def in_pool_process(**_: Any) -> None:
        _start_worker_tracing(app)

    signals.celeryd_init.connect(in_worker, weak=False)
    signals.worker_process_init.connect(in_pool_process, weak=False)


def _start_worker_tracing(app: Flask) -> None:
    start_tracing(WORKER_SERVICE)
    trace_engine(app.extensions["db"].engine)


def client_span(name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Any]:
    """A CLIENT span around a call no instrumentation sees (SMTP); a no-op while tracing is off."""
    if _state.provider is None:
        return _OFF
    return trace.get_tracer("rideshare").start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)
