"""Module-level process-executor handlers for test_lifecycle: children import them by name."""

import time
from pathlib import Path

import pgqueue


def wait_for_cancel(path: str) -> str:
    """Say it started, wait until the job is cancelled, say so, then stop as told."""
    Path(path + ".started").write_text("started")
    job = pgqueue.current_job()
    deadline = time.monotonic() + 30
    while not job.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    Path(path + ".seen").write_text(str(job.cancelled))
    job.check_cancelled()  # raises JobCancelled
    return "not cancelled"


def report_progress(path: str) -> str:
    """A burst of reports, a pause until told to go on, then a last report."""
    job = pgqueue.current_job()
    for step in range(1, 51):
        job.set_progress(step / 100, message=f"step {step}")
    Path(path + ".started").write_text("started")
    deadline = time.monotonic() + 30
    while not Path(path + ".go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    job.set_progress(1.0, message="done")
    return "finished"
