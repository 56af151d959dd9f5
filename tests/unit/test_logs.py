"""The worker's log formats: fields, quoting, time stamps, and passwords removed on the way (in
messages, arguments, extras and tracebacks)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

import pytest

from pgqueue import logs

SECRET = "s3cr3t-Pw"


def emitted(formatter: logging.Formatter, log: Callable[[logging.Logger], None]) -> list[str]:
    """The lines ``log`` gives through a handler with the redaction filter and ``formatter``."""
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
        log(logger)
    finally:
        logger.removeHandler(handler)
    return lines


@pytest.mark.timeout(10)
def test_the_log_filter_removes_passwords_from_messages_arguments_and_tracebacks() -> None:
    def log(logger: logging.Logger) -> None:
        logger.warning(
            "connecting to %s",
            f"postgresql://u:{SECRET}@db:5432/app",
            extra={"url": f"postgres://u:{SECRET}@x/y"},
        )
        logger.warning("dsn host=db password=%s dbname=app", SECRET)
        try:
            raise RuntimeError(f"failed: postgresql://u:{SECRET}@db/app")
        except RuntimeError:
            logger.exception("boom", extra={"job_id": 7, "outcome": "failed"})

    records = emitted(logs.JsonFormatter(), log)
    assert len(records) == 3
    assert all(SECRET not in line for line in records), records
    entries = [json.loads(line) for line in records]
    assert entries[0]["message"] == "connecting to postgresql://u:***@db:5432/app"
    assert entries[0]["url"] == "postgres://u:***@x/y"
    assert entries[1]["message"] == "dsn host=db password=*** dbname=app"
    assert entries[2]["job_id"] == 7 and "RuntimeError" in entries[2]["exception"]


@pytest.mark.timeout(10)
def test_the_text_format_shows_job_fields_first_quotes_what_needs_it_and_removes_passwords() -> None:
    def log(logger: logging.Logger) -> None:
        logger.warning("job %s done", 7, extra={
            "zeta": "a b", "outcome": "completed", "duration": 0.12345, "job_id": 7, "queue": "default",
            "empty": "", "eq": "k=v", "quote": 'say "hi"', "skipped": None, "ids": [1, 2],
            "dsn": f"postgresql://u:{SECRET}@db/app",
        })
        logger.warning("env PGPASSWORD=%s and Password = %s", SECRET, SECRET)

    [line, other] = emitted(logs.TextFormatter(), log)
    stamp, rest = line[:23], line[24:]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", stamp), line
    assert rest == (
        'WARNING job 7 done job_id=7 queue=default duration=0.123 outcome=completed '
        'dsn=postgresql://u:***@db/app empty="" eq="k=v" ids=1,2 quote="say \\"hi\\"" zeta="a b"'
    )
    assert other.endswith("env PGPASSWORD=*** and Password = ***") and SECRET not in other


@pytest.mark.timeout(10)
def test_the_json_format_carries_the_scrubbed_extras() -> None:
    [line] = emitted(logs.JsonFormatter(), lambda logger: logger.warning(
        "plain message", extra={"job_id": 3, "url": f"postgres://u:{SECRET}@x/y", "note": "no secret here"}
    ))
    entry = json.loads(line)
    assert entry["message"] == "plain message" and entry["job_id"] == 3
    assert entry["url"] == "postgres://u:***@x/y" and entry["note"] == "no secret here"
    assert list(entry)[:5] == ["time", "level", "logger", "message", "pid"]


@pytest.mark.timeout(10)
def test_the_text_format_stamps_each_line_with_its_own_time() -> None:
    """The formatter keeps the text of the last second it stamped: a line in another second, before
    or after it, must get that second's text, and every line its own milliseconds."""
    formatter = logs.TextFormatter()
    stamps = []
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5, 1_699_999_999.0, 1_700_000_000.125):
        record = logging.LogRecord("pgqueue.worker", logging.INFO, "f", 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        stamps.append(formatter.format(record)[:23])
    expected = [
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(created))) + f".{ms:03d}"
        for created, ms in ((1_700_000_000, 250), (1_700_000_000, 750), (1_700_000_001, 500),
                            (1_699_999_999, 0), (1_700_000_000, 125))
    ]
    assert stamps == expected
