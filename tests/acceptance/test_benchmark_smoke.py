"""The benchmark suite still runs end to end (quick sizes). It asserts nothing about speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_quick_benchmark_run_prints_its_tables(server_dsn: str, tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--dsn", server_dsn, "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=380,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = report.read_text()
    assert "ceiling" in text.lower() and "pgqueue" in text
    assert "| enqueue" in text or "enqueue" in text
    assert done.stdout.strip(), "the report goes to stdout too"
    for row in ("pick-up p50, floor", "floor: pgqueue's INSERT on its table"):
        floor = next(line for line in text.splitlines() if row in line)
        assert "not measured" not in floor, floor
    assert "timed from the last one's first claim" in text  # the 2-process drains


@pytest.mark.timeout(200)
def test_the_table_shape_benchmark_drains_every_shape(server_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.schema_cost", "--jobs", "600", "--batch", "50", "--rounds", "1",
         "--dsn", server_dsn],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = {}
    for line in done.stdout.splitlines()[2:]:
        name, rate, ratio, wal = line.rsplit(maxsplit=3)
        rows[name.strip()] = (float(rate.replace(",", "")), float(ratio), float(wal.replace(",", "")))
    assert list(rows) == ["raw", "pgqueue", "pgqueue, no feature indexes", "pgqueue, pkey + fetch only",
                          "hot + history"], done.stdout
    assert rows["raw"][1] == 1.0
    assert all(rate > 0 and wal > 0 for rate, _, wal in rows.values()), done.stdout
    # pgqueue's rows are wider than the ceiling's six columns: each job writes more WAL.
    assert rows["pgqueue"][2] > rows["raw"][2], done.stdout
