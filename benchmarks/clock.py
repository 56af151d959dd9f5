"""The clock every timestamp of the suite is taken on, in whatever process takes it."""

from __future__ import annotations

import sys
import time

_SHARED_MONOTONIC = sys.platform.startswith("linux") and hasattr(time, "CLOCK_MONOTONIC")


def now_ns() -> int:
    """A timestamp two processes on this machine can subtract.

    On Linux, CLOCK_MONOTONIC is one system-wide counter (the same in every process) that never
    steps, so a time taken in a producer and one taken in a listener (or in a worker's handler)
    compare directly. ``time.perf_counter`` promises no such thing. Elsewhere, fall back to the
    wall clock.
    """
    if _SHARED_MONOTONIC:
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return time.time_ns()
