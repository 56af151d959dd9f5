"""Tracing: the enqueue's span is the parent of the job's run span, through the job row."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pgqueue
import pgqueue.tracing

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, list]:
    found: dict[str, list] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


async def test_a_jobs_run_continues_the_trace_of_the_request_that_enqueued_it(app, conn, spans):
    provider, exporter = spans
    tracer = provider.get_tracer("web")
    inner_trace_ids = []

    @app.task("send-email")
    def send_email(user_id: int) -> None:  # a thread handler: its own spans are children of the run
        with tracer.start_as_current_span("smtp") as span:
            inner_trace_ids.append(span.get_span_context().trace_id)

    @app.task("crash", max_attempts=1)
    async def crash() -> None:
        raise RuntimeError("CRM call failed\nHTTP 503")

    pgqueue.tracing.instrument(app, provider)
    with tracer.start_as_current_span("POST /signup") as request:
        with conn.transaction():
            send_email.enqueue(user_id=1, conn=conn)  # in the caller's transaction
        crash.enqueue()  # on the App's own pool
    untraced = send_email.enqueue_many([{"user_id": 2}, {"user_id": 3}])  # no current span: still traced
    stored = conn.execute("SELECT trace FROM pgqueue.job ORDER BY id").fetchall()
    assert "traceparent" in stored[0][0] and "traceparent" in stored[1][0]
    assert len(untraced) == 2

    await app.arun_worker(burst=True, poll_interval=0.1)

    spans_ = by_name(exporter)
    trace_id = request.get_span_context().trace_id
    enqueue = spans_["pgqueue.enqueue send-email"][0]
    assert enqueue.kind == SpanKind.PRODUCER
    assert enqueue.context.trace_id == trace_id and enqueue.parent.span_id == request.get_span_context().span_id
    runs = [s for s in spans_["pgqueue.run send-email"] if s.context.trace_id == trace_id]
    assert len(runs) == 1
    run = runs[0]
    assert run.kind == SpanKind.CONSUMER
    assert run.parent.span_id == enqueue.context.span_id
    assert run.attributes["pgqueue.job.attempt"] == 1
    assert run.attributes["pgqueue.job.queue"] == "default"
    assert run.attributes["pgqueue.job.outcome"] == "completed"
    assert trace_id in inner_trace_ids
    smtp = [s for s in spans_["smtp"] if s.context.trace_id == trace_id][0]
    assert smtp.parent.span_id == run.context.span_id

    failed = spans_["pgqueue.run crash"][0]
    assert failed.context.trace_id == trace_id
    assert failed.attributes["pgqueue.job.outcome"] == "failed"
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "RuntimeError: CRM call failed"


def test_without_instrument_nothing_is_stored(app, conn):
    @app.task("plain")
    def plain() -> None:
        pass

    plain.enqueue()
    plain.enqueue_many([{}] * 100)  # the COPY path
    assert conn.execute("SELECT count(*) FROM pgqueue.job WHERE trace IS NOT NULL").fetchone()[0] == 0
