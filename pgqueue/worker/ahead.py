"""Claiming ahead: a worker whose jobs finish faster than a round trip to the database claims a
few more jobs than it has free slots, so that its next claim travels while its jobs run.

Without it, a worker of short jobs alternates: its slots wait while the claim travels, then the
database waits while the jobs run. With it, the claim loop asks for the jobs that the running
ones will have freed by the time the answer comes back, about
``concurrency * round trip / mean job duration`` (never more than ``concurrency``, nor
:data:`MOST`); they wait in
the worker, with their leases renewed by the heartbeat like running jobs, and start as slots
free. Jobs that take longer than a round trip are never claimed ahead (the estimate rounds to 0).
"""

from __future__ import annotations

from collections import deque
from collections.abc import MutableMapping

from ..db.sql import CLAIM_MOST
from .records import ClaimedJob, Running

SMOOTHING = 0.2
"""Weight of the newest figure in the running means of job durations and round trips."""

MOST = 100
"""The most jobs claimed ahead at once: bigger claims cost more per job than they save (a claim
of 500 drains slower than claims of 100 on the benchmark's raw-SQL ceiling), and a worker with
many slots keeps them busy with a smaller lead."""


class ClaimAhead:
    """The jobs claimed ahead, waiting for a slot, and how many more to claim.

    Jobs waiting here are also in the worker's ``running`` (the heartbeat renews their leases, a
    cancel or a lost lease marks them lost, shutdown hands them back), without a task."""

    def __init__(self, running: MutableMapping[int, Running], concurrency: int, enabled: bool) -> None:
        self.running = running
        self.concurrency = concurrency
        self.enabled = enabled
        self.waiting: deque[Running] = deque()
        self.duration: float | None = None
        """Running mean of the seconds a job runs."""
        self.round_trip: float | None = None
        """Running mean of the seconds a claim takes."""

    def started(self) -> int:
        """Jobs started and not finished: the slots taken."""
        return len(self.running) - len(self.waiting)

    def limit(self) -> int:
        """How many jobs to claim now: the free slots and the room for jobs claimed ahead (none
        while jobs wait here and no slot is free), at most :data:`~pgqueue.db.sql.CLAIM_MOST`."""
        free = self.concurrency - self.started()
        return min(free + self.room(), CLAIM_MOST) if free > 0 or not self.waiting else 0

    def room(self) -> int:
        """Jobs to claim beyond the free slots now."""
        if not self.enabled or self.duration is None or self.round_trip is None:
            return 0
        wanted = self.concurrency * self.round_trip / max(self.duration, 1e-6)
        return max(0, min(self.concurrency, MOST, int(wanted)) - len(self.waiting))

    def job_ran(self, seconds: float) -> None:
        self.duration = _mean(self.duration, seconds)

    def claimed(self, seconds: float) -> None:
        self.round_trip = _mean(self.round_trip, seconds)

    def next(self) -> Running | None:
        """The next waiting job to start; those lost meanwhile (cancelled, lease gone) are
        dropped: their outcome is not the worker's to record."""
        while self.waiting:
            running = self.waiting.popleft()
            if not running.lost:
                return running
            self.running.pop(running.job.id, None)
        return None

    def drop(self) -> int:
        """A connection was lost: forget the jobs waiting here, how many. Their claim may be gone
        with a server that failed over (the standby never saw it, and another worker may claim
        them again): they must not start. Those whose claim stands are handed back by the claim
        loop once it reaches the database (they are no longer in ``running``)."""
        dropped = len(self.waiting)
        while self.waiting:
            self.running.pop(self.waiting.popleft().job.id, None)
        return dropped

    def release(self) -> list[ClaimedJob]:
        """At shutdown: the jobs that never started, to hand back at once."""
        jobs = []
        while self.waiting:
            running = self.waiting.popleft()
            self.running.pop(running.job.id, None)
            if not running.lost:
                jobs.append(running.job)
        return jobs


def _mean(mean: float | None, value: float) -> float:
    return value if mean is None else mean + SMOOTHING * (value - mean)
