"""`loads_canonical` accepts exactly the bytes rfc8785 writes, and never a repeated name."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from audit.canonical import (
    _ENCODE,
    _ENCODE_ACYCLIC,
    dumps_canonical,
    dumps_plain,
    loads_canonical,
)
from audit.errors import InvalidEntry

SAFE = 2**53 - 1
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-SAFE, SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def canonical_or_none(value: Any) -> bytes | None:
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        return None  # lone surrogates and the like: RFC 8785 has no form for them


@given(values)
def test_accepts_every_canonical_form(value: Any) -> None:
    data = canonical_or_none(value)
    if data is not None:
        assert loads_canonical(data) == json.loads(data)


@given(
    values,
    st.sampled_from(
        [
            {},
            {"sort_keys": True},
            {"sort_keys": True, "separators": (",", ":")},
            {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False},
            {"separators": (",", ":"), "ensure_ascii": False},
            {"indent": 1},
        ]
    ),
)
def test_accepts_another_spelling_only_if_it_is_the_canonical_one(
    value: Any, options: dict[str, Any]
) -> None:
    try:
        data = json.dumps(value, **options).encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate written raw: not UTF-8 at all
    want = canonical_or_none(json.loads(data))
    if want == data:
        assert loads_canonical(data) == json.loads(data)
    else:
        with pytest.raises(InvalidEntry):
            loads_canonical(data)


@given(st.dictionaries(st.text(), scalars, min_size=1, max_size=4), scalars)
def test_refuses_a_repeated_member_name(members: dict[str, Any], other: Any) -> None:
    data, extra = canonical_or_none(members), canonical_or_none(other)
    if data is None or extra is None:
        return
    name = sorted(members)[0]
    first = json.dumps(name, ensure_ascii=False).encode() + b":"
    at = data.index(first)  # the first member; repeat its name with another value before it
    doubled = data[:at] + first + extra + b"," + data[at:]
    with pytest.raises(InvalidEntry, match="repeats the member name"):
        loads_canonical(doubled)


@pytest.mark.parametrize(
    ("data", "accepted"),
    [
        (b'{"a":0.25,"b":1e-7,"c":1e+21,"d":-1.5}', True),
        (b'{"a":1.0}', False),  # RFC 8785 writes 1
        (b'{"a":1e-07}', False),  # Python's repr, not ECMAScript's
        (b'{"a":1e+16}', False),  # RFC 8785 writes 10000000000000000
        (b'{"a":9007199254740992}', True),  # the double 2**53, written in full
        (b'{"a":9007199254740993}', False),  # no double has this value
        (b'{"a":-0}', False),
        (b'{"a":NaN}', False),
        (b'{"a":"\\u0041"}', False),
        (b'{"a":"\\u001f"}', True),
        (b'{"a":"\\u001F"}', False),
        (b'{"a":"\\ud800"}', False),  # a lone surrogate has no canonical form
        ('{"\U0001f600":1,"\uffff":2}'.encode(), True),  # UTF-16 order, not code points
        ('{"\uffff":2,"\U0001f600":1}'.encode(), False),
        (b'{"a":1} ', False),
        (b"\xff", False),
    ],
)
def test_edge_cases(data: bytes, accepted: bool) -> None:
    if accepted:
        assert loads_canonical(data) == json.loads(data)
    else:
        with pytest.raises(InvalidEntry):
            loads_canonical(data)


wide = st.recursive(
    scalars
    | st.integers()
    | st.floats()
    | st.sampled_from([2.0, -0.0, 1e-7, 1e16, 1e21, 2.0**53, 0.1, "\ud800", "\U0001f600"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(
            st.text() | st.sampled_from(["\U0001f600", "\uffff", "a\U00010000"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@given(wide)
def test_dumps_canonical_writes_exactly_what_rfc8785_writes(value: Any) -> None:
    """The fast writer gives rfc8785's bytes, or refuses exactly when rfc8785 refuses."""
    try:
        expected: bytes | None = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, RecursionError, OverflowError):
        expected = None
    if expected is None:
        with pytest.raises((rfc8785.CanonicalizationError, RecursionError, OverflowError)):
            dumps_canonical(value)
    else:
        assert dumps_canonical(value) == expected


def test_dumps_canonical_leaves_unusual_values_to_rfc8785() -> None:
    """Each value the C encoder would spell differently takes the rfc8785 path."""
    for value, text in [
        (2.0, b"2"),
        (-0.0, b"0"),
        (1e-7, b"1e-7"),
        (1e16, b"10000000000000000"),
        ({"\U0001f600": 1, "\uffff": 2}, '{"\U0001f600":1,"\uffff":2}'.encode()),
        ([0.25, "é", None, True], '[0.25,"é",null,true]'.encode()),
    ]:
        assert dumps_canonical(value) == text == rfc8785.dumps(value)
    assert dumps_plain({"a": 1.5, "b": [1, "x"]}) == b'{"a":1.5,"b":[1,"x"]}'
    assert dumps_plain({"a": 2.0}) is None and dumps_plain({1: 2}) is None
    cycle: list[Any] = []
    cycle.append(cycle)
    assert dumps_plain(cycle) is None
    looped: dict[str, Any] = {"a": [1]}
    looped["b"] = {"c": looped}
    assert dumps_plain(looped) is None
    deep: Any = 1
    for _ in range(64):
        deep = [deep]
    assert dumps_plain(deep) == b"[" * 64 + b"1" + b"]" * 64
    assert dumps_plain([deep]) is None  # 65 levels: left to rfc8785


@given(values)
def test_the_encoder_built_once_writes_what_json_encoder_writes(value: Any) -> None:
    # _ENCODE_ACYCLIC is the C encoder built once without cycle markers: same bytes.
    assert _ENCODE_ACYCLIC(value) == _ENCODE(value)


@given(wide)
def test_dumps_plain_writes_what_the_c_encoder_writes(value: Any) -> None:
    """orjson (the writer of plain values) agrees byte for byte with the C ``json`` encoder."""
    data = dumps_plain(value)
    if data is not None:
        assert data == _ENCODE_ACYCLIC(value).encode("utf-8")


@pytest.mark.parametrize(
    "value",
    [
        "".join(map(chr, range(0x800))) + "\u2028\u2029\ud7ff\ue000\ufeff\uffff",
        [0.1, 1e-4, 123456789012345.6, 9007199254740991, -9007199254740991, 0.30000000000000004],
        {"é": 1, "e\u0301": 2, "z": 3, "Z": 4, "a\x00": 5, "\x7f": 6, "\uffff": 7},
    ],
)
def test_dumps_plain_on_escapes_floats_and_name_order(value: Any) -> None:
    assert dumps_plain(value) == _ENCODE_ACYCLIC(value).encode("utf-8") == rfc8785.dumps(value)
