"""jobqueue/tracing.py and rideshare/telemetry.py without servers.

The engine reads the process's global tracer provider, which can be set only once, so the
checks that need one state or the other run in a fresh interpreter each.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from rideshare import telemetry

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tracing_off_costs_the_engine_a_global_read_and_installs_nothing() -> None:
    out = run_python(
        """
        import sys
        import jobqueue.task, jobqueue.worker
        from jobqueue import tracing
        from rideshare import telemetry

        class Job:
            id = "j1"
            trace = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'

        assert tracing.carrier() == ""
        off = tracing.job_span(Job, "payment", 1)
        assert off is tracing.job_span(Job, "email", 2)  # one shared no-op, nothing made per job
        with off as span:
            assert span is None
        assert tracing._found is None  # looked for once, and remembered
        assert telemetry.client_span("smtp send", {}) is telemetry.client_span("smtp send", {})
        assert not telemetry.tracing_requested({})
        sdk = ("opentelemetry.sdk.trace", "opentelemetry.instrumentation")
        print(sorted(m for m in sys.modules if m.startswith(sdk)))
        """
    )
    assert out.strip() == "[]"


def test_a_job_span_joins_the_trace_its_record_carries_and_records_what_failed() -> None:
    out = run_python(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace import SpanKind, StatusCode
        from jobqueue import tracing

        assert tracing.tracer() is None  # looked for before the app set its provider
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        tracing.refresh()

        class Job:
            id = "j1"
            trace = ""

        assert tracing.carrier() == ""  # no span: nothing to carry
        with trace.get_tracer("test").start_as_current_span("POST /payments", kind=SpanKind.SERVER) as request:
            Job.trace = tracing.carrier()
        assert set(json.loads(Job.trace)) == {"traceparent"}
        with tracing.job_span(Job, "payment", 1):
            pass
        try:
            with tracing.job_span(Job, "payment", 2):
                try:
                    raise ConnectionError("gateway down")
                except ConnectionError as exc:
                    raise RuntimeError("retry in 5 s") from exc
        except RuntimeError:
            pass
        Job.trace = "not json"
        with tracing.job_span(Job, "payment", 3):
            pass
        first, second, third = [s for s in exporter.get_finished_spans() if s.name == "job payment"]
        for run in (first, second):
            assert run.kind is SpanKind.CONSUMER
            assert run.context.trace_id == request.get_span_context().trace_id
            assert run.parent.span_id == request.get_span_context().span_id
        assert dict(second.attributes) == {
            "messaging.system": "jobqueue",
            "messaging.operation.type": "process",
            "messaging.destination.name": "payment",
            "messaging.message.id": "j1",
            "jobqueue.attempt": 2,
        }
        assert first.status.status_code is StatusCode.UNSET
        assert second.status.status_code is StatusCode.ERROR
        assert [e.attributes["exception.type"] for e in second.events] == ["RuntimeError", "ConnectionError"]
        assert third.parent is None and third.context.trace_id != first.context.trace_id  # a new trace, still run
        print("ok")
        """
    )
    assert out.strip() == "ok"


@pytest.mark.parametrize(
    ("environ", "requested"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(environ: dict[str, str], requested: bool) -> None:
    assert telemetry.tracing_requested(environ) is requested


def test_an_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="zipkin"):
        telemetry.exporters_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_a_trace_starts_at_a_request_a_job_or_a_message_never_at_a_stray_call() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=telemetry.entry_spans_sampler(ALWAYS_ON))  # this test's own, not global
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("HGETALL", kind=SpanKind.CLIENT):  # a heartbeat: no trace
        pass
    for kind in (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER):
        with (
            tracer.start_as_current_span(kind.name, kind=kind),
            tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT),
        ):
            pass
    assert [s.name for s in exporter.get_finished_spans()] == [
        "SELECT",
        "SERVER",
        "SELECT",
        "CONSUMER",
        "SELECT",
        "PRODUCER",
    ]
    provider.shutdown()
