"""``/metrics``: queue-level gauges read from the database at scrape time, in Prometheus' format.

``pgqueue_jobs{queue,state}`` counts the jobs of each queue in each state (the table keeps
finished jobs until they are pruned), ``pgqueue_oldest_waiting_seconds{queue}`` is how long
the oldest runnable job of a queue has waited (0 when none waits). Worker-side metrics are
the workers' own business; these come from the table, so any one dashboard serves them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..db.inspect import STATES, QueueStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class QueueCollector(Collector):
    """Reads the queues' numbers on each collection (``read`` runs the database query)."""

    def __init__(self, read: Callable[[], tuple[dict[str, dict[str, int]], list[QueueStats]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts, overview = self.read()
        jobs = GaugeMetricFamily(
            "pgqueue_jobs", "Jobs in the table per queue and state.", labels=["queue", "state"]
        )
        for queue in sorted(counts):
            for state in STATES:
                jobs.add_metric([queue, state], counts[queue].get(state, 0))
        yield jobs
        oldest = GaugeMetricFamily(
            "pgqueue_oldest_waiting_seconds",
            "Seconds the oldest runnable job of the queue has waited (0 when none waits).",
            labels=["queue"],
        )
        for stats in overview:
            oldest.add_metric([stats.queue], stats.oldest_waiting_seconds or 0.0)
        yield oldest


def exposition(read: Callable[[], tuple[dict[str, dict[str, int]], list[QueueStats]]]) -> bytes:
    """One scrape's text: a registry of its own, so nothing else registered in the process mixes in."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(read))
    return generate_latest(registry)
