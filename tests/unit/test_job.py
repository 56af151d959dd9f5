"""Per-job options, names, data encoding and retry delays: the checks every enqueue runs before it writes."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from pgqueue import InvalidJob, Job, JobState, PayloadTooLarge
from pgqueue.codec import encode_data
from pgqueue.job import JobOptions, retry_delay_seconds, validate_name

UTC = timezone.utc

# --- JobOptions --------------------------------------------------------------------------


def test_build_validates_and_normalises() -> None:
    options = JobOptions.build(
        queue="emails",
        priority=-3,
        max_attempts=7,
        delay=timedelta(minutes=2),
        retry_delay=5,
        retry_backoff=False,
        retry_delay_max=timedelta(hours=1),
        timeout=30,
        unique_key="user:1",
    )
    assert options == JobOptions(
        queue="emails",
        priority=-3,
        max_attempts=7,
        delay=120.0,
        retry_delay=5.0,
        retry_backoff=False,
        retry_delay_max=3600.0,
        timeout=30.0,
        unique_key="user:1",
    )
    assert isinstance(options.delay, float)


def test_build_with_nothing_sets_nothing() -> None:
    assert JobOptions.build() == JobOptions()


def test_build_refuses_unknown_names_and_lists_the_known_ones() -> None:
    with pytest.raises(InvalidJob) as caught:
        JobOptions.build(priorty=3, delay=1)
    assert "priorty" in str(caught.value)
    assert "priority" in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [
        {"priority": True},
        {"priority": 1.5},
        {"priority": "1"},
        {"priority": 2**31},
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"max_attempts": 2.0},
        {"max_attempts": False},
        {"delay": -1},
        {"delay": timedelta(seconds=-1)},
        {"delay": math.nan},
        {"delay": math.inf},
        {"delay": "5"},
        {"delay": True},
        {"delay": 11 * 365 * 86400},
        {"delay": 1, "run_at": datetime(2030, 1, 1, tzinfo=UTC)},
        {"run_at": datetime(2030, 1, 1)},
        {"run_at": "2030-01-01T00:00:00+00:00"},
        {"timeout": 0},
        {"timeout": -5},
        {"retry_delay": -1},
        {"retry_delay_max": math.inf},
        {"retry_backoff": 1},
        {"unique_key": ""},
        {"unique_key": 5},
        {"unique_key": "k" * 1025},
        {"unique_key": "a\x00b"},
        {"unique_key": "a\ud800b"},
        {"queue": ""},
        {"queue": " emails"},
        {"queue": 5},
    ],
)
def test_build_refuses_bad_values(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidJob):
        JobOptions.build(**options)


def test_run_at_keeps_its_time_zone() -> None:
    when = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert JobOptions.build(run_at=when).run_at == when


def test_merged_takes_every_field_the_other_sets() -> None:
    base = JobOptions.build(queue="a", priority=1, max_attempts=3, timeout=10)
    over = JobOptions.build(priority=5, unique_key="k")
    assert base.merged(over) == JobOptions(
        queue="a", priority=5, max_attempts=3, timeout=10.0, unique_key="k"
    )
    assert base.merged(JobOptions()) == base


def test_merged_delay_and_run_at_replace_each_other() -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)
    with_delay = JobOptions.build(delay=5)
    with_run_at = JobOptions.build(run_at=when)
    assert with_delay.merged(with_run_at) == JobOptions(run_at=when)
    assert with_run_at.merged(with_delay) == JobOptions(delay=5.0)
    # The result of a merge is still valid: never both set.
    assert with_delay.merged(with_run_at).validated() == JobOptions(run_at=when)


def test_merged_keeps_a_false_or_zero_that_is_set() -> None:
    base = JobOptions.build(retry_backoff=True, priority=4, delay=10)
    assert base.merged(JobOptions.build(retry_backoff=False, priority=0, delay=0)) == JobOptions(
        retry_backoff=False, priority=0, delay=0.0
    )


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["emails", "send-welcome-email", "a", "x" * 128, "'; DROP TABLE pgqueue.job; --", "письма", "a b"]
)
def test_valid_names(name: str) -> None:
    assert validate_name("queue", name) == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 129, " emails", "emails ", "a\nb", "a\tb", "a\x00b", "a\x7fb", "a\ud800", None, 5, b"emails"],
)
def test_invalid_names(name: object) -> None:
    with pytest.raises(InvalidJob):
        validate_name("queue", name)


# --- data --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"user_id": 42},
        {"text": "héllo ✓ 日本語 🎉", "list": [1, 2.5, None, True, False], "nested": {"a": {"b": [[]]}}},
        {"big": 2**200, "neg": -(2**70), "zero": 0, "float": 0.1, "tiny": 5e-324},
        {"huge_float": 1e300, "large_float": 1e16, "negative": -1.5e20, "max": 1.7976931348623157e308},
        {"hostile": "'; DROP TABLE pgqueue.job; --", "backslash": "\\u0000", "quote": '"'},
        {"depth": [[[[[[[[[[1]]]]]]]]]]},
    ],
)
def test_encode_data_round_trips_through_json(data: dict[str, Any]) -> None:
    text = encode_data(data, 1 << 20)
    assert json.loads(text) == data


def test_encode_data_keeps_floats_floats() -> None:
    # jsonb prints a number written with an exponent as an integer; a float must come back a float.
    text = encode_data({"a": 1e300, "b": 1e16, "c": -2.5e17, "d": 1.0}, 1 << 20)
    assert "e" not in text.lower()
    decoded = json.loads(text)
    assert all(isinstance(value, float) for value in decoded.values())
    assert decoded == {"a": 1e300, "b": 1e16, "c": -2.5e17, "d": 1.0}


def test_encode_data_is_compact_utf8() -> None:
    assert encode_data({"a": [1, 2], "b": "é"}, 100) == '{"a":[1,2],"b":"é"}'


def test_encode_data_turns_tuples_and_mapping_views_into_json() -> None:
    assert json.loads(encode_data({"t": (1, (2, 3))}, 100)) == {"t": [1, [2, 3]]}
    assert json.loads(encode_data(MappingProxyType({"a": MappingProxyType({"b": 1})}), 100)) == {
        "a": {"b": 1}
    }


def _circular_dict() -> dict[str, Any]:
    data: dict[str, Any] = {}
    data["self"] = data
    return data


def _circular_list() -> dict[str, Any]:
    items: list[Any] = []
    items.append(items)
    return {"items": items}


def _nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for _ in range(depth - 1):
        data = {"x": data}
    return data


@pytest.mark.parametrize(
    "data",
    [
        {"s": {1, 2}},
        {"b": b"bytes"},
        {"b": bytearray(b"x")},
        {"when": datetime(2030, 1, 1, tzinfo=UTC)},
        {"d": Decimal("1.5")},
        {"o": object()},
        {"nan": math.nan},
        {"inf": math.inf},
        {"ninf": -math.inf},
        {"deep": [{"nan": math.nan}]},
        _circular_dict(),
        _circular_list(),
        {1: "int key"},
        {"nested": {(1, 2): "tuple key"}},
        {"nested": {None: "none key"}},
        {"v": "a\x00b"},
        {"a\x00b": 1},
        {"v": "lone \ud800 surrogate"},
        {"lone \udfff": 1},
        {"huge_int": 10**5000},
        _nested(102),
        [1, 2],
        "text",
        None,
        42,
    ],
)
def test_encode_data_refuses_what_json_cannot_carry(data: Any) -> None:
    with pytest.raises(InvalidJob):
        encode_data(data, 1 << 20)


def test_nesting_limit_is_a_hundred_levels() -> None:
    encode_data(_nested(100), 1 << 20)
    with pytest.raises(InvalidJob, match="nested"):
        encode_data(_nested(101), 1 << 20)


def test_shared_but_not_circular_values_are_fine() -> None:
    shared = [1, 2]
    assert json.loads(encode_data({"a": shared, "b": shared}, 100)) == {"a": [1, 2], "b": [1, 2]}


def test_payload_limit_counts_utf8_bytes() -> None:
    text = encode_data({"a": "é" * 10}, 100)
    size = len(text.encode("utf-8"))
    assert size == len(text) + 10
    assert encode_data({"a": "é" * 10}, size) == text
    with pytest.raises(PayloadTooLarge, match=str(size)):
        encode_data({"a": "é" * 10}, size - 1)
    assert issubclass(PayloadTooLarge, InvalidJob)


# --- retry delays ------------------------------------------------------------------------


def test_retry_delay_without_backoff_is_fixed() -> None:
    assert [retry_delay_seconds(n, 7.0, False, 10.0) for n in range(1, 6)] == [7.0] * 5


def test_retry_delay_zero_stays_zero() -> None:
    assert retry_delay_seconds(5, 0.0, True, None) == 0.0


def test_retry_delay_backoff_doubles_within_jitter() -> None:
    random.seed(1234)
    for attempt in range(1, 12):
        base = 2.0 * 2 ** (attempt - 1)
        samples = [retry_delay_seconds(attempt, 2.0, True, None) for _ in range(200)]
        assert all(base / 2 <= s <= base for s in samples), (attempt, min(samples), max(samples))
        # The jitter really spreads retries out, over most of the range.
        assert max(samples) - min(samples) > base * 0.4


def test_retry_delay_backoff_is_capped() -> None:
    samples = [retry_delay_seconds(attempt, 1.0, True, 60.0) for attempt in range(7, 200) for _ in range(5)]
    assert all(30.0 <= s <= 60.0 for s in samples)
    # Far attempts do not overflow.
    assert 0 < retry_delay_seconds(10_000, 1.0, True, None) < math.inf


def test_retry_delay_first_attempt_uses_the_base_delay() -> None:
    samples = [retry_delay_seconds(1, 10.0, True, 3600.0) for _ in range(100)]
    assert all(5.0 <= s <= 10.0 for s in samples)
    assert 0 < retry_delay_seconds(0, 10.0, True, None) <= 10.0


# --- rows --------------------------------------------------------------------------------


def test_job_from_row_ignores_unknown_columns_and_types_the_state() -> None:
    now = datetime.now(UTC)
    row = {
        "id": 1,
        "type": "t",
        "queue": "q",
        "data": {"a": 1},
        "state": "failed",
        "priority": 0,
        "attempts": 2,
        "max_attempts": 2,
        "run_at": now,
        "created_at": now,
        "errors": None,
        "column_from_a_later_version": "ignored",
    }
    job = Job.from_row(row)
    assert job.state is JobState.FAILED
    assert job.errors == []
    assert job.success is False
    assert Job.from_row({**row, "state": "completed"}).success is True
    assert Job.from_row({**row, "state": "created"}).success is None
    assert str(JobState.ACTIVE) == "active"
