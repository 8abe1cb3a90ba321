"""Traces: one trace from a request through its job's run to the Stripe and SMTP calls.

The SDK's in-memory exporter lives in this process, so the worker does too: a real Celery
worker (celery.contrib.testing.worker.start_worker, solo pool) with the engine's consumer
bootsteps, on an app of this module's own (own_queues_env: queues no other worker takes),
whose requests, SQL, Redis and Stripe calls are traced as rideshare/telemetry.py traces
them when OTEL_EXPORTER_OTLP_ENDPOINT is set.
"""

import json
import re
import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from flask import Flask
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import MetaData

from devstack.processes import stop
from jobqueue.outbox import Outbox, outbox_table
from rideshare import telemetry
from rideshare.auth import issue_token
from rideshare.jobs import add_email_job
from rideshare.payments.service import create_payment
from tests.conftest import Stack, eventually, own_app, wait_for_jobs
from tests.conftest import start_worker as start_worker_process

pytestmark = [
    pytest.mark.integration,
    # The mail service keeps each thread's SMTP connection open for its next message; the
    # in-process worker's thread ends with its test and drops its connection unclosed.
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]


@pytest.fixture(scope="session")
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, every span kept in memory; the instrumentations undone afterwards.

    Once per session: OpenTelemetry sets a process's tracer provider once, and pytest runs
    this module's SQLite tests and its PostgreSQL tests apart (the database is a session
    parameter), so a module's fixture set up again would find its new provider refused.
    """
    exporter = InMemorySpanExporter()
    telemetry.start_tracing("rideshare-test", [SimpleSpanProcessor(exporter)])
    try:
        yield exporter
    finally:
        telemetry.stop_tracing()


@pytest.fixture
def traced_app(stack: Stack, own_queues_env: dict[str, str], spans: InMemorySpanExporter) -> Iterator[Flask]:
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"trace{secrets.token_hex(3)}"}
    with own_app(env) as app:
        telemetry.trace_app(app)
        spans.clear()
        yield app


@pytest.fixture
def worker(traced_app: Flask, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A real worker in this process, on the payment and email queues."""
    # start_worker reads TEST_BROKER as a broker host name; the app names its broker itself.
    monkeypatch.delenv("TEST_BROKER", raising=False)
    celery = traced_app.extensions["celery"]
    try:
        with start_worker(
            celery, pool="solo", queues=["payment", "email"], perform_ping_check=False, shutdown_timeout=15
        ):
            yield
    finally:
        # start_worker made this app the thread's current Celery app; give it back to the stack's.
        stack.app.extensions["celery"].set_current()


def in_trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """span's parents, nearest first, as far as they were recorded."""
    found = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


def url_of(span: ReadableSpan) -> str:
    attributes: Any = span.attributes or {}
    return str(attributes.get("url.full") or attributes.get("http.url") or "")


def job_spans(spans: list[ReadableSpan], queue: str, job_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.name == f"job {queue}" and s.kind is SpanKind.CONSUMER and s.attributes["messaging.message.id"] == job_id
    ]


def test_a_payment_request_its_job_and_its_stripe_and_smtp_calls_are_one_trace(
    traced_app: Flask, worker: None, spans: InMemorySpanExporter
) -> None:
    client = traced_app.test_client()
    headers = {"Authorization": f"Bearer {issue_token('42', 'user')}"}
    ride = client.post(
        "/rides", json={"riderId": "42", "driverId": "d-1", "pickup": "Main St", "dropoff": "Airport"}, headers=headers
    )
    assert ride.status_code == 201, ride.json
    to = f"traced-{secrets.token_hex(4)}@example.com"
    body = {"amount": "25.50", "paymentMethod": "pm_card_visa", "rideId": ride.json["id"], "receiptEmail": to}
    accepted = client.post("/payments", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.json
    job_id = accepted.json["jobId"]
    store = traced_app.extensions["jobs"].store
    [job] = wait_for_jobs(store, [job_id], timeout=20)
    assert job.state == "completed", job.failed_reason
    [request] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER and s.name == "POST /payments"]
    # The job's record carries the request's trace context.
    assert json.loads(job.trace)["traceparent"].split("-")[1] == f"{request.context.trace_id:032x}"

    def whole_trace() -> list[ReadableSpan] | None:
        # A job's span ends just after its state is stored: the receipt email's is the last.
        found = in_trace(spans, request.context.trace_id)
        return found if {"smtp send", "job email"} <= {s.name for s in found} else None

    found = eventually(whole_trace, timeout=15)
    assert found, [s.name for s in in_trace(spans, request.context.trace_id)]
    by_id = {s.context.span_id: s for s in found}
    [run] = job_spans(found, "payment", job_id)
    assert run.parent.span_id == request.context.span_id
    assert run.attributes["messaging.system"] == "jobqueue"
    assert run.attributes["messaging.destination.name"] == "payment"
    assert run.attributes["jobqueue.attempt"] == 1
    assert run.status.is_ok
    stripe_calls = [s for s in found if s.kind is SpanKind.CLIENT and "/v1/payment_intents" in url_of(s)]
    assert stripe_calls, [s.name for s in found]
    assert all(run in ancestors(call, by_id) for call in stripe_calls)
    # The receipt email, queued by the payment's job, runs in the same trace, out to SMTP.
    [smtp] = [s for s in found if s.name == "smtp send"]
    mail_run = ancestors(smtp, by_id)[0]
    assert mail_run.name == "job email" and mail_run.kind is SpanKind.CONSUMER
    assert run in ancestors(mail_run, by_id)
    assert smtp.attributes["server.port"] == traced_app.config["SMTP_PORT"]
    # The SQL of the request and of the job, and the enqueue's Redis script, are in it too.
    sql = [s for s in found if s.instrumentation_scope.name.endswith(".sqlalchemy")]
    assert any(run not in ancestors(s, by_id) for s in sql) and any(run in ancestors(s, by_id) for s in sql)
    assert any(s.name == "EVALSHA" and s.parent.span_id == request.context.span_id for s in found)
    assert {s.resource.attributes["service.name"] for s in found} == {"rideshare-test"}


def test_a_retried_job_runs_each_attempt_in_the_first_ones_trace(
    traced_app: Flask, worker: None, stack: Stack, spans: InMemorySpanExporter
) -> None:
    client = traced_app.test_client()
    headers = {"Authorization": f"Bearer {issue_token('42', 'user')}"}
    ride = client.post(
        "/rides", json={"riderId": "42", "driverId": "d-1", "pickup": "Main St", "dropoff": "Airport"}, headers=headers
    )
    stack.services.stripe.inject("500")  # the first attempt's first Stripe call fails: a retry
    with trace.get_tracer("test").start_as_current_span("charge", kind=SpanKind.PRODUCER) as parent:
        _payment, job = create_payment(
            user_id="42",
            ride_id=ride.json["id"],
            amount=Decimal("9.00"),
            currency="eur",
            payment_method="pm_card_visa",
            backoff={"type": "fixed", "delay": 200},
        )
    [done] = wait_for_jobs(traced_app.extensions["jobs"].store, [job.id], timeout=20)
    assert (done.state, done.attempts) == ("completed", 2), done.failed_reason

    runs = eventually(lambda: len(found := job_spans(spans.get_finished_spans(), "payment", job.id)) == 2 and found)
    assert runs, [s.name for s in spans.get_finished_spans()]
    first, second = sorted(runs, key=lambda s: s.attributes["jobqueue.attempt"])
    assert [first.attributes["jobqueue.attempt"], second.attributes["jobqueue.attempt"]] == [1, 2]
    for run in (first, second):
        assert run.context.trace_id == parent.get_span_context().trace_id
        assert run.parent.span_id == parent.get_span_context().span_id
    assert not first.status.is_ok
    recorded = [event.attributes["exception.type"] for event in first.events if event.name == "exception"]
    assert any(name.endswith("Retry") for name in recorded) and any(name.endswith("APIError") for name in recorded)
    assert second.status.is_ok


def test_a_job_relayed_from_the_outbox_keeps_the_trace_it_was_staged_in(
    traced_app: Flask, spans: InMemorySpanExporter
) -> None:
    table = outbox_table(MetaData(), name=f"test_outbox_{secrets.token_hex(4)}")
    engine = traced_app.extensions["db"].engine
    table.create(engine)
    try:
        outbox = Outbox(table, lambda: engine, traced_app.extensions["jobs"].queues, settle_ms=0)
        with (
            trace.get_tracer("test").start_as_current_span("signup", kind=SpanKind.SERVER) as parent,
            engine.begin() as conn,
        ):
            # Staged and committed, never published: as a request that died after its commit.
            outbox.stage(conn, "email", {"to": "relay@example.com", "subject": "s", "text": "t"}, job_id="traced-1")
        assert outbox.relay() == 1
    finally:
        table.drop(engine)
    job = traced_app.extensions["jobs"].store.get("traced-1")
    traceparent = json.loads(job.trace)["traceparent"]
    assert traceparent.split("-")[1:3] == [
        f"{parent.get_span_context().trace_id:032x}",
        f"{parent.get_span_context().span_id:016x}",
    ]


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_worker_traces_its_jobs_where_they_run(
    stack: Stack, own_queues_env: dict[str, str], spans: InMemorySpanExporter, tmp_path: Any, pool: str
) -> None:
    """The shipped set-up, in a `celery worker` of its own: tracing starts in each pool process
    (prefork) or in the worker's own process (threads), where the sampler drops its heartbeats."""
    if not stack.env["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("the worker's set-up does not depend on the database: run once, on SQLite")
    env = {
        **own_queues_env,
        "JOB_KEY_PREFIX": f"trace{secrets.token_hex(3)}",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    log = tmp_path / "worker.log"
    with own_app(env) as app:
        with trace.get_tracer("test").start_as_current_span("signup", kind=SpanKind.SERVER) as parent:
            job = add_email_job({"to": f"{pool}-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello"})
        worker = start_worker_process(env, log, queues="email", concurrency=1, pool=pool)
        try:
            [done] = wait_for_jobs(app.extensions["jobs"].store, [job.id], timeout=20, logs=[log])
            assert done.state == "completed", done.failed_reason
            trace_id = f"0x{parent.get_span_context().trace_id:032x}"
            # The console exporter prints each span (as JSON) into the worker's log; the job's
            # span ends last, just after its state is stored.
            text = eventually(lambda: next((t for t in [log.read_text()] if '"name": "job email"' in t), None), 10)
        finally:
            stop(worker)
    assert text, log.read_text()[-3000:]
    # Each span a JSON block, its first line after the log prefix where Celery logs a pool process's
    # stdout ("[...: WARNING/ForkPoolWorker-1] {").
    printed = [json.loads(block) for block in re.findall(r"^(?:\[[^\n]*\] )?(\{\n.*?\n\})$", text, re.M | re.S)]
    ours = {span["name"] for span in printed if span["context"]["trace_id"] == trace_id}
    assert {"job email", "smtp send"} <= ours, ours
    # Nothing else: the worker's heartbeats, fetches and relays start no trace.
    assert {span["context"]["trace_id"] for span in printed} == {trace_id}
    assert {span["resource"]["attributes"]["service.name"] for span in printed} == {"rideshare-worker"}
