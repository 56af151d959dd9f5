"""Failure summaries: the exception's type and the first line of its message, from the stored report."""

from __future__ import annotations

import pytest

from pgqueue.codec import SUMMARY_CHARS, error_summary, error_text

pytestmark = pytest.mark.timeout(10)


def report(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException as raised:
        return error_text(raised)


class OperationalError(Exception):
    """Shaped like SQLAlchemy's: the message ends with a link on a line of its own."""


OperationalError.__module__ = "sqlalchemy.exc"


def test_a_multi_line_message_gives_its_first_line():
    text = report(RuntimeError("CRM call failed\nHTTP 503\n<html>\n<body>oops</body>"))
    assert text.rstrip().endswith("<body>oops</body>")  # what the last line used to show
    assert error_summary(text) == "RuntimeError: CRM call failed"


def test_a_sqlalchemy_style_message_is_not_summarised_by_its_background_link():
    message = (
        "(psycopg.OperationalError) connection failed: server closed the connection\n"
        "[SQL: SELECT 1]\n(Background on this error at: https://sqlalche.me/e/20/e3q8)"
    )
    text = report(OperationalError(message))
    assert text.rstrip().endswith("(Background on this error at: https://sqlalche.me/e/20/e3q8)")
    assert error_summary(text) == (
        "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: "
        "server closed the connection"
    )


def test_chained_exceptions_give_the_one_that_ended_the_attempt():
    try:
        try:
            raise KeyError("inner\nsecond line")
        except KeyError as inner:
            raise ValueError("outer one\nmore") from inner
    except ValueError as exc:
        text = error_text(exc)
    assert "KeyError" in text and "direct cause" in text
    assert error_summary(text) == "ValueError: outer one"
    try:
        try:
            1 / 0
        except ZeroDivisionError:
            raise LookupError("while handling")
    except LookupError as exc:
        assert error_summary(error_text(exc)) == "LookupError: while handling"


def test_odd_reports():
    assert error_summary(report(RuntimeError())) == "RuntimeError"
    assert error_summary("") == ""
    assert error_summary("job timed out after 3s\n") == "job timed out after 3s"
    assert error_summary("lease expired: the worker w stopped renewing it") == (
        "lease expired: the worker w stopped renewing it"
    )
    long = error_summary(report(RuntimeError("x" * 5000)))
    assert len(long) == SUMMARY_CHARS and long.startswith("RuntimeError: xxx")
    # A report cut at the storage limit in the middle of its frames: the summary still says something.
    cut = "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n[truncated]"
    assert error_summary(cut) == "[truncated]"
