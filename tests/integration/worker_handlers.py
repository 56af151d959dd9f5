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


def pay_in_own_transaction(dsn: str, order_id: int) -> str:
    """Write a payment and complete the job in one transaction, from a process-executor child."""
    import psycopg

    import pgqueue

    job = pgqueue.current_job()
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO payments (order_id, job_id, attempt) VALUES (%s, %s, %s)",
                     (order_id, job.id, job.attempt))
        job.complete(conn, output={"paid": order_id, "pid": os.getpid()})
    return "not stored: the handler completed the job itself"
