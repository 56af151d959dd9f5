"""Prometheus metrics of a worker process (the ``metrics`` extra: ``pip install 'pgqueue[metrics]'``).

>>> import pgqueue.metrics
>>> pgqueue.metrics.instrument(app)          # pgqueue work --metrics-port N does this for you
>>> app.run_worker(metrics_port=9100)        # serves http://host:9100/metrics

Counters and histograms are labelled by queue and job type:

- ``pgqueue_jobs_started_total``, ``pgqueue_jobs_completed_total``,
  ``pgqueue_jobs_failed_total`` (attempts that failed for good), ``pgqueue_jobs_retried_total``
  (attempts that failed and will run again), ``pgqueue_job_duration_seconds`` (histogram)
- ``pgqueue_claim_duration_seconds``: the claim round trip (which also records outcomes)
- ``pgqueue_lease_rescues_total``, ``pgqueue_listener_reconnects_total``, ``pgqueue_jobs_in_flight``

Under ``--processes N`` each worker process serves its own metrics on ``port + index``, one scrape
target per process (see the README for why not prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .errors import ConfigurationError
from .settings import worker_index
from .worker.events import WorkerEvents

if TYPE_CHECKING:
    from .app import App
    from .settings import WorkerConfig
    from .worker.executors import Outcome
    from .worker.records import ClaimedJob

log = logging.getLogger("pgqueue.worker")

JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class WorkerMetrics(WorkerEvents):
    """The worker's events counted in prometheus-client metrics, in ``registry`` (default: the
    process's global one, which ``start_http_server`` serves)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        labels = ("queue", "type")
        self.started = Counter(
            "pgqueue_jobs_started", "Jobs whose handler started.", labels, registry=registry
        )
        self.completed = Counter(
            "pgqueue_jobs_completed", "Attempts recorded as completed.", labels, registry=registry
        )
        self.failed = Counter(
            "pgqueue_jobs_failed",
            "Attempts that failed for good (the job is failed).",
            labels,
            registry=registry,
        )
        self.retried = Counter(
            "pgqueue_jobs_retried", "Attempts that failed and will run again.", labels, registry=registry
        )
        self.duration = Histogram(
            "pgqueue_job_duration_seconds",
            "Seconds a handler ran, per attempt.",
            labels,
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.claim = Histogram(
            "pgqueue_claim_duration_seconds",
            "Seconds of a claim round trip (it also records finished jobs' outcomes).",
            buckets=CLAIM_BUCKETS,
            registry=registry,
        )
        self.rescues = Counter(
            "pgqueue_lease_rescues", "Jobs handed back after their lease expired.", registry=registry
        )
        self.reconnects = Counter(
            "pgqueue_listener_reconnects", "Times the listener reconnected.", registry=registry
        )
        self.in_flight = Gauge("pgqueue_jobs_in_flight", "Jobs running in this process.", registry=registry)
        self._server: Any = None
        # Labelled children, cached: labels() costs more than the increment itself.
        self._children: dict[tuple[str, str], tuple[Any, ...]] = {}

    def _of(self, job: ClaimedJob) -> tuple[Any, ...]:
        key = (job.queue, job.type)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = tuple(
                metric.labels(*key)
                for metric in (self.started, self.completed, self.failed, self.retried, self.duration)
            )
        return children

    def worker_started(self, worker_id: str, config: WorkerConfig) -> None:
        if config.metrics_port is not None and self._server is None:
            port = config.metrics_port + worker_index()
            try:
                self._server = start_http_server(port, registry=self.registry)
            except OSError as exc:
                raise ConfigurationError(f"cannot serve metrics on port {port}: {exc}") from None
            log.info("serving metrics on http://0.0.0.0:%d/metrics", port)

    def worker_stopped(self, worker_id: str) -> None:
        server = self._server
        if server is not None:
            self._server = None
            httpd, thread = server
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)

    def job_started(self, job: ClaimedJob) -> None:
        self._of(job)[0].inc()
        self.in_flight.inc()

    def job_ended(self, job: ClaimedJob, outcome: Outcome, duration: float) -> None:
        self._of(job)[4].observe(duration)
        self.in_flight.dec()

    def job_finished(self, job: ClaimedJob, outcome: Outcome, duration: float, state: str) -> None:
        children = self._of(job)
        if state == "completed":
            children[1].inc()
        elif state == "failed":
            children[2].inc()
        elif state == "retry":
            children[3].inc()

    def claimed(self, n: int, seconds: float) -> None:
        self.claim.observe(seconds)

    def rescued(self, n: int) -> None:
        self.rescues.inc(n)

    def listener_reconnected(self) -> None:
        self.reconnects.inc()


def instrument(app: App, registry: CollectorRegistry = REGISTRY) -> WorkerMetrics:
    """Count what ``app``'s workers do in Prometheus metrics; a worker with ``metrics_port`` set
    serves them there. Returns the metrics (its ``registry`` is what is served)."""
    for observer in app._worker_events:
        if isinstance(observer, WorkerMetrics):
            return observer  # instrumented already
    metrics = WorkerMetrics(registry)
    app.add_worker_events(metrics)
    return metrics
