"""A handler's return value as the JSON text stored in the job's output column."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from pgqueue.codec import encode_output


@pytest.mark.parametrize("value", [1, "text", [1, 2], {"a": {"b": None}}, True, 2.5, "ünï ✓"])
def test_json_values_are_stored_as_they_are(value: Any) -> None:
    assert json.loads(encode_output(value)) == value  # type: ignore[arg-type]


def test_none_means_no_output() -> None:
    assert encode_output(None) is None


@pytest.mark.parametrize("value", [{1, 2}, object(), math.nan, b"bytes"])
def test_other_values_are_stored_as_their_repr(value: Any) -> None:
    assert json.loads(encode_output(value)) == {"repr": repr(value)}  # type: ignore[arg-type]


def test_circular_values_are_stored_as_their_repr() -> None:
    data: list[Any] = []
    data.append(data)
    assert json.loads(encode_output(data)) == {"repr": "[[...]]"}  # type: ignore[arg-type]


def test_nul_and_lone_surrogates_become_the_replacement_character() -> None:
    text = encode_output({"a\x00": "x\x00y", "s": "lone \ud800 here"})
    assert text is not None
    text.encode("utf-8")  # valid UTF-8 now
    assert "\\u0000" not in text
    assert json.loads(text) == {"a\ufffd": "x\ufffdy", "s": "lone \ufffd here"}


def test_an_escaped_backslash_before_u0000_is_text_not_nul() -> None:
    assert json.loads(encode_output("\\u0000")) == "\\u0000"  # type: ignore[arg-type]
    assert json.loads(encode_output("\\\x00")) == "\\\ufffd"  # type: ignore[arg-type]


def test_outputs_that_cannot_even_be_shown_do_not_raise() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    import json as _json

    from pgqueue.codec import encode_output as _encode

    assert _json.loads(_encode(Hostile())) == {"repr": "<unrepresentable Hostile>"}  # type: ignore[arg-type]
    assert "repr" in _json.loads(_encode(10**5000))  # type: ignore[arg-type]


def test_error_text_is_storable() -> None:
    from pgqueue.codec import error_text

    text = error_text(ValueError("nul\x00 and \ud800 surrogate"))
    assert "\x00" not in text
    text.encode("utf-8")
    assert "ValueError" in text
