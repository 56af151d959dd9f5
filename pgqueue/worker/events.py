"""What a worker tells observers (metrics, tracing) as it runs: a small hook interface.

The worker never imports an observer's library. An observer subclasses :class:`WorkerEvents`
and overrides the methods it needs (the others do nothing); :meth:`pgqueue.App.add_worker_events`
registers it. With no observer the worker's hot path pays one attribute check per job.

Every method is called on the worker's event loop and must not block: count, time, return.
An exception raised by an observer is logged and swallowed; it never stops a job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..settings import WorkerConfig
    from .executors import Outcome
    from .records import ClaimedJob

log = logging.getLogger("pgqueue.worker")


class WorkerEvents:
    """The points of a worker's life an observer hears about; each default does nothing."""

    def worker_started(self, worker_id: str, config: WorkerConfig) -> None:
        """The worker checked the schema and is about to claim its first jobs."""

    def worker_stopped(self, worker_id: str) -> None:
        """The worker has recorded its last outcomes and closed its connections."""

    def job_started(self, job: ClaimedJob) -> None:
        """A claimed job's handler is about to run, in the job's own asyncio task (so a context
        variable set here is seen by the handler, and :meth:`job_ended` runs in the same task)."""

    def job_ended(self, job: ClaimedJob, outcome: Outcome, duration: float) -> None:
        """The handler returned or raised (or overran its timeout), in the job's task. Its outcome
        is not recorded yet; :meth:`job_finished` follows once it is (not after a lost lease)."""

    def job_finished(self, job: ClaimedJob, outcome: Outcome, duration: float, state: str) -> None:
        """The attempt's outcome was recorded: ``state`` is ``completed``, ``retry`` (it failed and
        will run again), ``failed`` (it failed for good) or ``fenced`` (the lease was gone, so
        nothing was recorded)."""

    def claimed(self, n: int, seconds: float) -> None:
        """One claim round trip (which also records finished jobs) took ``seconds`` and claimed ``n``."""

    def rescued(self, n: int) -> None:
        """This worker's rescue sweep handed back ``n`` jobs whose lease had expired."""

    def listener_reconnected(self) -> None:
        """The listener lost its connection and listens again on a new one."""


class Fanout(WorkerEvents):
    """Several observers as one: each hears every event, in order; one that raises is logged and
    skipped."""

    def __init__(self, observers: Sequence[WorkerEvents]) -> None:
        self.observers = tuple(observers)

    def _each(self, method: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception:
                log.exception("worker event observer %r failed in %s", observer, method)

    def worker_started(self, worker_id: str, config: WorkerConfig) -> None:
        self._each("worker_started", worker_id, config)

    def worker_stopped(self, worker_id: str) -> None:
        self._each("worker_stopped", worker_id)

    def job_started(self, job: ClaimedJob) -> None:
        self._each("job_started", job)

    def job_ended(self, job: ClaimedJob, outcome: Outcome, duration: float) -> None:
        self._each("job_ended", job, outcome, duration)

    def job_finished(self, job: ClaimedJob, outcome: Outcome, duration: float, state: str) -> None:
        self._each("job_finished", job, outcome, duration, state)

    def claimed(self, n: int, seconds: float) -> None:
        self._each("claimed", n, seconds)

    def rescued(self, n: int) -> None:
        self._each("rescued", n)

    def listener_reconnected(self) -> None:
        self._each("listener_reconnected")


def announce_start(events: WorkerEvents | None, worker_id: str, config: WorkerConfig) -> None:
    """Tell the observers a worker started; warn when it was asked for metrics that nobody collects."""
    if events is not None:
        events.worker_started(worker_id, config)
    elif config.metrics_port is not None:
        log.warning(
            "metrics_port is set but no metrics are collected: call pgqueue.metrics.instrument(app) "
            "(pgqueue work does) with the metrics extra installed"
        )


def combine(observers: Sequence[WorkerEvents]) -> WorkerEvents | None:
    """None for no observers (the worker then skips every call), else one object for all of them."""
    if not observers:
        return None
    return Fanout(observers)
