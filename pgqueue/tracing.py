"""OpenTelemetry tracing of enqueues and job runs (the ``otel`` extra: ``pip install 'pgqueue[otel]'``).

>>> import pgqueue.tracing
>>> pgqueue.tracing.instrument(app)      # in the producers and in the workers

Each enqueue runs in a span ``pgqueue.enqueue <type>`` (kind PRODUCER) whose W3C trace context
(``traceparent``, ``tracestate``) is stored with the job, in its ``trace`` column. Each run of a
job is a span ``pgqueue.run <type>`` (kind CONSUMER), a child of the enqueue's span, with the
job's id, queue, attempt and outcome as attributes; spans a handler makes are its children
(async and thread handlers; process handlers run in another process). So a web request's trace
goes on into the jobs it enqueued. Without ``instrument`` nothing is stored and nothing runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .codec import error_summary
from .db.insert import templates_of
from .worker.events import WorkerEvents

if TYPE_CHECKING:
    from .app import App
    from .db.insert import NewJob
    from .worker.executors import Outcome
    from .worker.records import ClaimedJob

TRACER_NAME = "pgqueue"


class _RunSpans(WorkerEvents):
    """A span around each job's run, continuing the trace stored with the job."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.open: dict[int, tuple[Any, object]] = {}

    def job_started(self, job: ClaimedJob) -> None:
        parent = propagate.extract(job.trace) if job.trace else None
        span = self.tracer.start_span(
            f"pgqueue.run {job.type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "pgqueue",
                "messaging.destination.name": job.queue,
                "messaging.message.id": str(job.id),
                "pgqueue.job.id": job.id,
                "pgqueue.job.type": job.type,
                "pgqueue.job.queue": job.queue,
                "pgqueue.job.attempt": job.attempts,
            },
        )
        # Attached in the job's own task: the handler (and the spans it makes) runs in this context.
        token = otel_context.attach(trace.set_span_in_context(span))
        self.open[job.id] = (span, token)

    def job_ended(self, job: ClaimedJob, outcome: Outcome, duration: float) -> None:
        opened = self.open.pop(job.id, None)
        if opened is None:
            return
        span, token = opened
        span.set_attribute("pgqueue.job.outcome", "completed" if outcome.ok else "failed")
        if not outcome.ok:
            span.set_status(Status(StatusCode.ERROR, error_summary(outcome.error or "")))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]


def instrument(app: App, tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace ``app``'s enqueues and its workers' job runs (see the module's doc). Idempotent."""
    if app._enqueue_trace is not None:
        return
    tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    @contextmanager
    def enqueue_span(jobs: Sequence[NewJob]) -> Iterator[str | None]:
        types = sorted({template.type for template in templates_of(jobs)})
        name = f"pgqueue.enqueue {types[0] if len(types) == 1 else 'many'}"
        attributes: dict[str, Any] = {
            "messaging.system": "pgqueue",
            "messaging.batch.message_count": len(jobs),
            "pgqueue.job.type": ",".join(types),
        }
        with tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield json.dumps(carrier) if carrier else None

    app._enqueue_trace = enqueue_span
    app.add_worker_events(_RunSpans(tracer))
