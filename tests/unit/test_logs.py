"""The worker's log formats: fields, quoting, time stamps, and passwords removed on the way."""

from __future__ import annotations

import json
import logging
import re

import pytest

from pgqueue import logs

SECRET = "s3cr3t-Pw"


def emitted(formatter: logging.Formatter, *calls: tuple[str, tuple[object, ...], dict[str, object]]) -> list[str]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.addFilter(logs.RedactFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger("pgqueue.test-logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for message, args, extra in calls:
            logger.warning(message, *args, extra=extra)
    finally:
        logger.removeHandler(handler)
    return lines


@pytest.mark.timeout(10)
def test_the_text_format_shows_job_fields_first_quotes_what_needs_it_and_removes_passwords() -> None:
    [line, other] = emitted(
        logs.TextFormatter(),
        ("job %s done", (7,), {"zeta": "a b", "outcome": "completed", "duration": 0.12345, "job_id": 7,
                               "queue": "default", "empty": "", "eq": "k=v", "quote": 'say "hi"',
                               "skipped": None, "ids": [1, 2], "dsn": f"postgresql://u:{SECRET}@db/app"}),
        ("env PGPASSWORD=%s and Password = %s", (SECRET, SECRET), {}),
    )
    stamp, rest = line[:23], line[24:]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", stamp), line
    assert rest == (
        'WARNING job 7 done job_id=7 queue=default duration=0.123 outcome=completed dsn=postgresql://u:***@db/app '
        'empty="" eq="k=v" ids=1,2 quote="say \\"hi\\"" zeta="a b"'
    )
    assert other.endswith("env PGPASSWORD=*** and Password = ***") and SECRET not in other


@pytest.mark.timeout(10)
def test_the_json_format_carries_the_scrubbed_extras() -> None:
    [line] = emitted(
        logs.JsonFormatter(),
        ("plain message", (), {"job_id": 3, "url": f"postgres://u:{SECRET}@x/y", "note": "no secret here"}),
    )
    entry = json.loads(line)
    assert entry["message"] == "plain message" and entry["job_id"] == 3
    assert entry["url"] == "postgres://u:***@x/y" and entry["note"] == "no secret here"
    assert list(entry)[:5] == ["time", "level", "logger", "message", "pid"]
