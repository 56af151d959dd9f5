"""An app for the debounce acceptance test: every run of a job is written to a table."""

from __future__ import annotations

import json
from typing import Any

import psycopg

import pgqueue

app = pgqueue.App()

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    job_id bigint NOT NULL,
    uid    uuid NOT NULL,
    data   jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


@app.task("reindex", queue="keys")
async def reindex(doc: int, version: int) -> None:
    job = pgqueue.current_job()
    conn: psycopg.AsyncConnection[Any]
    async with await psycopg.AsyncConnection.connect(app.database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO runs (job_id, uid, data) VALUES (%s, %s, %s)",
            (job.id, job.uid, json.dumps({"doc": doc, "version": version})),
        )
