"""An app for the scheduler's acceptance tests: two one-second schedules of a task that does nothing."""

from __future__ import annotations

from datetime import timedelta

import pgqueue

app = pgqueue.App()


@app.periodic(every=timedelta(seconds=1), name="every-second")
@app.task("tick", queue="schedules")
def tick() -> None:
    pass


@app.task("tock", queue="schedules")
@app.periodic(cron="* * * * * *", catch_up=True, name="every-second-caught-up")
def tock() -> None:
    pass
