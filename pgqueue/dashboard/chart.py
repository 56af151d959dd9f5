"""The throughput chart's geometry: stacked bars of completed and failed jobs per minute.

Only numbers are computed here; the template draws them as inline SVG (so nothing in it
comes from job data, and the page needs no script or stylesheet from elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

WIDTH = 720
HEIGHT = 160
TOP = 12
LEFT = 40
BOTTOM = 20


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    completed_y: float
    completed_height: float
    failed_y: float
    failed_height: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    base: float
    peak: int
    bars: list[Bar]
    completed: int
    failed: int
    first: str
    last: str


def _nice(value: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten at least ``value`` (a readable axis top)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def throughput_chart(minutes: list[dict[str, Any]]) -> Chart:
    """Bars for rows ``{minute, completed, failed}``, oldest first."""
    peak = _nice(max([row["completed"] + row["failed"] for row in minutes] + [1]))
    base = float(HEIGHT - BOTTOM)
    span = base - TOP
    slot = (WIDTH - LEFT) / max(len(minutes), 1)
    bars = []
    for i, row in enumerate(minutes):
        completed_h = span * row["completed"] / peak
        failed_h = span * row["failed"] / peak
        minute: datetime = row["minute"]
        bars.append(
            Bar(
                x=round(LEFT + i * slot + 1, 1),
                width=round(max(slot - 2, 1), 1),
                completed_y=round(base - completed_h, 1),
                completed_height=round(completed_h, 1),
                failed_y=round(base - completed_h - failed_h, 1),
                failed_height=round(failed_h, 1),
                label=f"{minute.astimezone():%H:%M}: {row['completed']} completed, {row['failed']} failed",
            )
        )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=TOP,
        base=base,
        peak=peak,
        bars=bars,
        completed=sum(row["completed"] for row in minutes),
        failed=sum(row["failed"] for row in minutes),
        first=f"{minutes[0]['minute'].astimezone():%H:%M}" if minutes else "",
        last=f"{minutes[-1]['minute'].astimezone():%H:%M}" if minutes else "",
    )
