"""Cheap checks of CSV and JSON-lines text before a parser sees it.

pyarrow's JSON parser recurses once per nesting level: a 120 KB line nested 20,000
deep crashes the process (SIGSEGV).  A decompressed stream can be a thousand times
its compressed size.  So the child that parses a source (``connectors.convert``)
passes its text through a :class:`LineChecker` first, which hands on only whole
lines and refuses, with a :class:`LimitExceeded` naming the limit (never the data):

- more bytes in total than ``max_bytes`` (counted after decompression);
- a line longer than ``max_line_bytes``;
- for JSON, a line nested deeper than ``max_depth`` (brackets inside strings do not count).

The common case costs a few passes in C per chunk: a line with no more opening
brackets than ``max_depth`` cannot be deeper, and only other lines are measured
exactly (in Python, stopping at ``max_depth``).
"""

from __future__ import annotations

import re

__all__ = ["LimitExceeded", "LineChecker", "json_depth"]


class LimitExceeded(Exception):
    """The input is past a limit; ``reason`` names the limit and its value, never the data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# A JSON string: quote, then non-quote/non-backslash runs or escapes, then quote (possessive:
# no backtracking).  Leftmost matching, scanning forward, finds the strings a parser would in
# any valid prefix of a line; where a line stops being valid JSON the parser stops too.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"[{]}", b"(())")
_OPEN = ord("(")
_NOT_OPENERS_OR_NEWLINE = bytes(b for b in range(256) if b not in b"[{\n")


def json_depth(line: bytes, *, stop_above: int | None = None) -> int:
    """Nesting depth of the JSON text ``line``; counting stops once it exceeds ``stop_above``.

    >>> json_depth(b'{"a": [1, {"b": "[[[["}], "c": {}}')
    3
    >>> json_depth(b"[" * 100 + b"]" * 100, stop_above=5)
    6
    """
    brackets = _STRING.sub(b"", line).translate(_ONE_KIND, _NOT_BRACKETS)
    # Each pass removes the innermost pairs, one level of every nest: passes = depth.
    rest, depth = brackets, 0
    while rest and (stop_above is None or depth <= stop_above):
        reduced = rest.replace(b"()", b"")
        if len(reduced) == len(rest):  # unbalanced: measure the line as written
            return _running_depth(brackets, stop_above)
        rest, depth = reduced, depth + 1
    return depth


def _running_depth(brackets: bytes, stop_above: int | None) -> int:
    """The deepest a parser could nest into ``brackets`` before it fails on the imbalance."""
    depth = deepest = 0
    for byte in brackets:
        if byte == _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif depth > 0:
            depth -= 1
    return deepest


class LineChecker:
    """Turns chunks of a byte stream into checked whole lines (see the module docstring)."""

    def __init__(self, *, max_bytes: int, max_line_bytes: int, max_depth: int | None) -> None:
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self.max_depth = max_depth
        self.total = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete lines so far, checked; an incomplete last line is kept for later."""
        self.total += len(chunk)
        if self.total > self.max_bytes:
            raise LimitExceeded(
                f"decompressed size above {self.max_bytes} bytes (ingest_max_bytes)"
            )
        data = self._tail + chunk
        cut = data.rfind(b"\n") + 1
        lines, self._tail = data[:cut], data[cut:]
        if len(self._tail) > self.max_line_bytes:
            raise self._too_long()
        self._check(lines)
        return lines

    def finish(self) -> bytes:
        """The last line (without a newline), checked."""
        rest, self._tail = self._tail, b""
        self._check(rest)
        return rest

    def _too_long(self) -> LimitExceeded:
        return LimitExceeded(
            f"a line longer than {self.max_line_bytes} bytes (ingest_max_line_bytes)"
        )

    def _check(self, lines: bytes) -> None:
        # No line can be longer than all of them, nor hold more openers than all of them.
        if len(lines) > self.max_line_bytes and max(map(len, lines.split(b"\n"))) > (
            self.max_line_bytes
        ):
            raise self._too_long()
        if self.max_depth is None:
            return
        openers = lines.translate(None, _NOT_OPENERS_OR_NEWLINE)
        if len(openers) - openers.count(b"\n") <= self.max_depth:
            return
        counts = openers.split(b"\n")
        if max(map(len, counts)) <= self.max_depth:
            return
        split = lines.split(b"\n")
        for index, count in enumerate(counts):
            if len(count) > self.max_depth and (
                json_depth(split[index], stop_above=self.max_depth) > self.max_depth
            ):
                raise LimitExceeded(f"nesting depth above {self.max_depth} (ingest_max_depth)")
