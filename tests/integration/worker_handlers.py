"""Module-level handlers for the process executor: child processes import them by name."""

import os
import time


def cpu_square(n: int) -> dict:
    return {"square": n * n, "pid": os.getpid()}


def exit_hard(code: int) -> None:
    os._exit(code)


def sleep_forever() -> None:
    time.sleep(3600)


def whoami() -> dict:
    import pgqueue

    job = pgqueue.current_job()
    return {"id": job.id, "attempt": job.attempt, "type": job.type}
