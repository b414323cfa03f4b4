"""The text checks that run before pyarrow sees a line: depth, line length, total size."""

from __future__ import annotations

import pytest

from connectors.scan import LimitExceeded, LineChecker, json_depth

DEPTHS = [
    (b"", 0),
    (b"1", 0),
    (b'{"a": 1}', 1),
    (b"[[1], [2, [3]]]", 3),
    (b'{"a": [1, {"b": {}}]}', 4),
    (b'{"s": "[[[[{{{{"}', 1),  # brackets in strings are data
    (b'{"s": "\\"[[[[", "t": []}', 2),  # an escaped quote does not end the string
    (b'{"s": "\\\\", "t": [[]]}', 3),  # an escaped backslash does
    (b"[" * 20 + b"]" * 20, 20),
    (b"[{}" * 30 + b"]" * 30, 31),  # wide and deep: every nest counts
    (b"[]" * 1000, 1),  # wide and shallow
    (b"]]]][[[", 3),  # unbalanced: how deep a parser could go before failing
    (b'"never closed [[[[', 4),  # an unterminated string hides nothing
]


@pytest.mark.parametrize(("line", "depth"), DEPTHS)
def test_json_depth(line: bytes, depth: int) -> None:
    assert json_depth(line) == depth


def test_json_depth_stops_counting_past_the_limit() -> None:
    assert json_depth(b"[" * 20_000 + b"]" * 20_000, stop_above=64) == 65


def _checker(**limits: int | None) -> LineChecker:
    values: dict[str, int | None] = {"max_bytes": 1 << 20, "max_line_bytes": 100, "max_depth": 5}
    values.update(limits)
    return LineChecker(**values)  # type: ignore[arg-type]


def test_only_whole_checked_lines_pass_through() -> None:
    checker = _checker()
    assert checker.feed(b'{"a": 1}\n{"b"') == b'{"a": 1}\n'
    assert checker.feed(b": 2}\n[1]") == b'{"b": 2}\n'
    assert checker.finish() == b"[1]"


def test_a_deep_line_is_refused_even_split_across_chunks() -> None:
    checker = _checker()
    assert checker.feed(b"[1]\n[[[[[[") == b"[1]\n"
    with pytest.raises(LimitExceeded, match=r"^nesting depth above 5 \(ingest_max_depth\)$"):
        checker.feed(b"1]]]]]]\n")


def test_many_shallow_objects_on_one_line_pass() -> None:
    line = b"[" + b", ".join([b'{"x": [1]}'] * 40) + b"]\n"
    assert _checker(max_line_bytes=10_000).feed(line) == line


@pytest.mark.parametrize("depth", [None, 5])
def test_long_lines_are_refused(depth: int | None) -> None:
    checker = _checker(max_depth=depth)
    assert checker.feed(b"x" * 100 + b"\n") == b"x" * 100 + b"\n"
    with pytest.raises(LimitExceeded, match=r"^a line longer than 100 bytes"):
        checker.feed(b"short\n" + b"y" * 101 + b"\nshort\n")


def test_an_endless_line_is_refused_before_its_end() -> None:
    checker = _checker()
    with pytest.raises(LimitExceeded, match="a line longer than 100 bytes"):
        for _ in range(10):
            checker.feed(b"z" * 60)


def test_total_size_counts_every_byte_fed() -> None:
    checker = _checker(max_bytes=1000)
    for _ in range(10):
        checker.feed(b"a,b\n" * 25)
    with pytest.raises(LimitExceeded, match=r"^decompressed size above 1000 bytes"):
        checker.feed(b"\n")


def test_csv_text_is_not_checked_for_depth() -> None:
    assert _checker(max_depth=None).feed(b'"[[[[[[[[[[",1\n') == b'"[[[[[[[[[[",1\n'
