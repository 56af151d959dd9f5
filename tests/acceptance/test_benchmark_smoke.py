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
