"""Text pgqueue writes to PostgreSQL: job data, handler outputs, error reports, array literals.

Pure functions, no I/O: the enqueue path, the worker and the handler-side completion all
encode through here, so what PostgreSQL accepts (no NUL, no lone surrogates, jsonb's numbers)
is decided once.
"""

from __future__ import annotations

import json
import math
import re
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring as _quote
from typing import Any

from .errors import InvalidJob, PayloadTooLarge

MAX_NESTING = 100
"""Deepest nesting of lists and mappings accepted in job data."""

MAX_ERROR_CHARS = 20_000
"""Longest error report stored for a failed attempt; longer ones are cut and marked."""


# --- job data ----------------------------------------------------------------------------


def check_text(what: str, text: str) -> None:
    """Refuse text PostgreSQL cannot store: a NUL character, or a lone surrogate."""
    if "\x00" in text:
        raise InvalidJob(f"{what} contains a NUL character, which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJob(f"{what} contains a lone surrogate and is not valid Unicode") from None


def encode_data(data: Any, max_bytes: int) -> str:
    """Encode a job's data as JSON text, refusing what would not come back to the handler unchanged.

    Accepted: mappings with string keys, lists and tuples, strings, ints, finite floats, bools and None.
    Tuples come back as lists, other mappings as dicts.
    """
    text = _encode_flat(data)
    if text is None:
        if not isinstance(data, Mapping):
            raise InvalidJob(
                f"job data must be a mapping of argument names to values, got {type(data).__name__}"
            )
        parts: list[str] = []
        _encode(data, "data", 0, set(), parts)
        text = "".join(parts)
    # Both paths have refused lone surrogates, so the text encodes; ASCII text is its own size.
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > max_bytes:
        raise PayloadTooLarge(f"job data is {size} bytes as JSON, over the limit of {max_bytes} bytes")
    return text


_FLAT_TYPES = frozenset({str, int, bool, type(None)})
_INT_LIMIT = 10**300
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _flat_encoder() -> Callable[[dict[str, Any], int], Iterable[str]]:
    """The chunks of compact JSON text of a dict of plain scalars, as ``_ENCODER`` writes them.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which costs more than
    encoding a small dict; one built once serves every call. (No circular-reference
    markers: a dict of scalars has no cycle.) Falls back to ``_ENCODER`` where the C
    encoder is missing or does not take these arguments.
    """
    try:
        encoder = c_make_encoder(None, None, _quote, None, ":", ",", False, False, False)
        sample = {"a": 1, "b": 'é\n"', "c": 1.5, "d": None, "e": True}
        if "".join(encoder(sample, 0)) == _ENCODER.encode(sample):
            return encoder  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - any surprise: the pure-Python path is always right
        pass
    return lambda data, _: (_ENCODER.encode(data),)


_flat_chunks = _flat_encoder()


def _encode_flat(data: Any) -> str | None:
    """The common case at C speed: a dict of str keys to plain scalars. None: take the careful walk.

    Every check of the walk holds here too: what json.dumps would change or PostgreSQL refuse
    (NUL, lone surrogates, floats that jsonb would read back as ints, huge ints) falls back.
    """
    if type(data) is not dict:
        return None
    for key, value in data.items():
        if type(key) is not str:
            return None
        kind = type(value)
        if kind is int:
            if not -_INT_LIMIT < value < _INT_LIMIT:
                return None
        elif kind is float:
            if not math.isfinite(value) or (abs(value) >= 1e16):
                return None
        elif kind not in _FLAT_TYPES:
            return None
    text = "".join(_flat_chunks(data, 0))
    # A NUL in a key or a string is written \u0000 (so is a backslash followed by "u0000",
    # which the walk accepts): one search of the text instead of one per string.
    if "\\u0000" in text:
        return None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the walk says where
            return None
    return text


def _encode(value: Any, path: str, depth: int, open_containers: set[int], out: list[str]) -> None:
    """Check ``value`` and append its compact JSON text to ``out``, in one walk."""
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        try:
            out.append(int.__repr__(value))
        except ValueError:  # beyond sys.get_int_max_str_digits(): it could not be read back either
            raise InvalidJob(f"{path} is an integer too long to convert to text") from None
    elif isinstance(value, str):
        check_text(f"string at {path}", value)
        out.append(_quote(value))
    elif isinstance(value, float):
        out.append(_float_text(value, path))
    elif isinstance(value, (Mapping, list, tuple)):
        if depth >= MAX_NESTING:
            raise InvalidJob(f"job data is nested more than {MAX_NESTING} levels deep at {path}")
        if id(value) in open_containers:
            raise InvalidJob(f"job data contains a circular reference at {path}")
        open_containers.add(id(value))
        if isinstance(value, Mapping):
            out.append("{")
            for index, (key, item) in enumerate(value.items()):
                if not isinstance(key, str):
                    raise InvalidJob(
                        f"{path} has a key {key!r} of type {type(key).__name__}; JSON keys are strings"
                    )
                check_text(f"key at {path}", key)
                out.append("," if index else "")
                out.append(_quote(key))
                out.append(":")
                _encode(item, f"{path}[{key!r}]", depth + 1, open_containers, out)
            out.append("}")
        else:
            out.append("[")
            for index, item in enumerate(value):
                out.append("," if index else "")
                _encode(item, f"{path}[{index}]", depth + 1, open_containers, out)
            out.append("]")
        open_containers.discard(id(value))
    else:
        raise InvalidJob(
            f"{path} is a {type(value).__name__}, which is not JSON; convert it first "
            "(e.g. datetimes to ISO strings, sets to lists, bytes to base64 text)"
        )


def _float_text(value: float, path: str) -> str:
    if not math.isfinite(value):
        raise InvalidJob(f"{path} is {value}, which JSON cannot carry")
    text = float.__repr__(value)
    if "e" in text and abs(value) >= 1:
        # jsonb stores numbers as numeric and prints 1e+16 back as the integer 10000000000000000:
        # write the float's exact decimal value with a fraction digit so that it reads back a float.
        text = f"{value:.1f}"
    return text


# --- handler outputs ---------------------------------------------------------------------

_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_output(value: Any) -> str | None:
    """A handler's return value as JSON text that PostgreSQL accepts.

    Values JSON cannot carry are stored as ``{"repr": ...}``; NUL characters and lone
    surrogates, which jsonb refuses, become U+FFFD.
    """
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        try:
            shown = repr(value)[:10_000]
        except Exception:  # noqa: BLE001 - a handler's output must never take the worker down
            shown = f"<unrepresentable {type(value).__name__}>"
        text = json.dumps({"repr": shown}, ensure_ascii=False)
    text = _SURROGATE.sub("\ufffd", text)
    return _ESCAPED_NUL.sub(lambda m: m.group(1) + "\\ufffd", text)


# --- errors ------------------------------------------------------------------------------


def error_text(exc: BaseException) -> str:
    """The exception with its traceback, as text PostgreSQL accepts (no NUL, no lone surrogates)."""
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:  # noqa: BLE001 - an exception whose __str__ raises
        text = f"{type(exc).__name__} (its message could not be shown)"
    text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "\n[truncated]"


SUMMARY_CHARS = 300
"""Longest error summary shown on one line (the stored report is never cut for it)."""


def error_summary(text: str) -> str:
    """One line for a stored error report: the exception's type and the first line of its message.

    ``text`` is what :func:`error_text` stored (``traceback.format_exception`` output). The
    summary comes from the last traceback in it, the exception that ended the attempt when
    exceptions were chained, and keeps only its message's first line: a message that goes on
    (an HTTP body, SQLAlchemy's "Background on this error at" link) stays in the full report.
    Text that is not a traceback (a timeout, a lost lease) gives its first non-blank line.

    >>> error_summary(error_text(RuntimeError("CRM call failed\\nHTTP 503")))
    'RuntimeError: CRM call failed'
    """
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    for header in reversed(headers):
        for line in lines[header + 1 :]:
            if line and not line[0].isspace():
                return _cut(line.rstrip())
    for line in lines:
        if line.strip():
            return _cut(line.strip())
    return ""


def _cut(line: str) -> str:
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "\u2026"


# --- array literals ----------------------------------------------------------------------


def number_array(values: Sequence[int | float]) -> str:
    """A PostgreSQL array literal of numbers."""
    return "{" + ",".join(map(str, values)) + "}"


def text_array(values: Sequence[Any]) -> str:
    """A PostgreSQL array literal of text (``None`` is NULL; other values are written with ``str``)."""
    return "{" + ",".join("NULL" if v is None else _quoted(str(v)) for v in values) + "}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
