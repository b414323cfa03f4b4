"""Canonical JSON (RFC 8785) written fast, and read back refusing every other spelling.

A verifier that only hashes bytes cannot say what an entry means; one that parses
them must be sure every reader reads the same thing.  JSON lets one object repeat a
member name (``{"decision":"deny","decision":"allow"}``: most parsers keep the last,
some the first) and spell one value many ways (escapes, whitespace, ``1.0`` or ``1``);
RFC 8785 allows exactly one spelling.  So :func:`loads_canonical` accepts bytes only
if serializing what it parsed gives back the very same bytes: a repeated name is lost
in the parse, and the bytes then differ.

Serializing with :mod:`rfc8785` (pure Python) costs about 100 µs for an audit entry.
The C ``json`` encoder with sorted keys, no whitespace and no ASCII escaping writes
the same bytes as RFC 8785 for every JSON value but two: some floats (RFC 8785 writes
the ECMAScript form: ``1e-7``, not ``1e-07``; ``2``, not ``2.0``) and member names
outside the Basic Multilingual Plane (RFC 8785 sorts by UTF-16 code units).  Input
holding either takes the rfc8785 path; a float such as ``0.25``, whose Python ``repr``
is already its RFC 8785 form (rfc8785 itself starts from ``repr``), does not.
Writing works the same way (:func:`dumps_canonical`): a walk over the value decides
whether it is plain (exact built-in types, no such float or name, integers within
+-(2**53 - 1)); plain values take orjson (which writes them as the C encoder does,
faster), the rest :mod:`rfc8785`.  A
hypothesis property checks both give the same bytes.

Verifiers read every entry of a log, so reading has a quicker first try,
:func:`loads_quick` (about 2 µs an entry instead of 20): :mod:`orjson` parses, and
writes back with sorted keys; if that gives the very same bytes, holds no float
written differently by RFC 8785 (the same test as for writing), no integer beyond
+-(2**53 - 1) and no character beyond U+FFFF, the bytes are the RFC 8785 form.  It
only ever accepts: whatever it cannot prove goes to :func:`loads_canonical`, which
decides and says why.  Hypothesis properties check that it accepts nothing
:func:`loads_canonical` refuses, and gives the same value.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import rfc8785

from audit.errors import InvalidEntry

__all__ = [
    "Unproven",
    "dumps_canonical",
    "dumps_plain",
    "loads_canonical",
    "loads_quick",
    "loads_sorted",
    "plain_floats",
]

_SAFE = 2**53  # beyond +-(2**53 - 1), an integer literal is a double that rfc8785 must write
_ASTRAL = re.compile(rb"[\xf0-\xf4]")  # the lead byte of a UTF-8 character beyond U+FFFF


class _Unusual(Exception):
    """A float literal whose RFC 8785 form is not its Python ``repr``: use rfc8785."""


def _float(text: str) -> float:
    value = float(text)
    if "e" in text or text.endswith(".0") or repr(value) != text:
        raise _Unusual
    return value


def _int(text: str) -> int:
    value = int(text)
    if not -_SAFE < value < _SAFE:
        raise _Unusual  # a large double written in full: only rfc8785 knows its form
    return value


def _int_or_double(text: str) -> int | float:
    """RFC 8785 numbers are doubles: ``1e+20`` is written ``100000000000000000000``."""
    value = int(text)
    return value if -_SAFE < value < _SAFE else float(value)


def _constant(text: str) -> Any:
    raise InvalidEntry(f"{text} is not JSON")


_FAST = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_constant)
_SLOW = json.JSONDecoder(parse_int=_int_or_double, parse_constant=_constant)
_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode


def _one_shot_encoder() -> Callable[[Any], str]:
    """``_ENCODE`` without its per-call set-up, for values that hold no cycle.

    ``JSONEncoder.encode`` builds a new C encoder and a cycle-marker dict on every
    call: about half its cost for an audit entry's details.  The C encoder built once,
    with the same settings and no markers, writes the same bytes; a cycle is then not
    detected, so it takes only values that cannot hold one (passed by :func:`_plain`,
    or just parsed from JSON).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the _json accelerator
        return _ENCODE

    def refuse(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON")

    iterencode = make(
        None, refuse, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))  # a tuple or list of str

    return encode


_ENCODE_ACYCLIC = _one_shot_encoder()
_MAX_DEPTH = 64


def _plain(value: Any) -> bool:
    """Whether the C encoder writes ``value`` exactly as RFC 8785 does (see the module doc).

    Exact built-in types only, string member names within the Basic Multilingual Plane,
    integers within +-(2**53 - 1) and floats whose ``repr`` is their ECMAScript form;
    anything else (or nesting deeper than 64, or a cycle) is left to :mod:`rfc8785`.
    The walk keeps the members of each array or object on its stack, not each member,
    so a flat object (most details) costs one pass over its values.
    """
    stack: list[tuple[Iterable[Any], int]] = [((value,), 0)]
    pop, push = stack.pop, stack.append
    while stack:
        members, depth = pop()
        for item in members:
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if -_SAFE < item < _SAFE:
                    continue
                return False
            if kind is float:
                if -_SAFE < item < _SAFE:
                    text = repr(item)
                    if "e" not in text and not text.endswith(".0"):
                        continue
                return False  # 2.0, -0.0, 1e-07, inf, nan, beyond +-2**53
            if depth >= _MAX_DEPTH:
                return False
            if kind is dict:
                for key in item:
                    if type(key) is not str or (not key.isascii() and max(key) > "\uffff"):
                        return False  # RFC 8785 sorts names by UTF-16 code units
                push((item.values(), depth + 1))
            elif kind is list or kind is tuple:
                push((item, depth + 1))
            else:
                return False
    return True


# Sorted keys at every level; an integer beyond 64 bits raises rather than being written.
_PLAIN = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def dumps_plain(value: Any) -> bytes | None:
    """The canonical bytes of ``value`` from orjson, or None if it is not plain.

    Plain values (almost every audit entry's) are written by orjson exactly as by the
    C ``json`` encoder above and so as RFC 8785 writes them (the same shortest float
    digits as ``repr``, the same minimal escapes, names sorted by code point), about
    ten times faster than the C encoder and fifty than :mod:`rfc8785`: appends
    canonicalize every entry's details in the caller's thread.  A hypothesis property
    checks all three agree.
    """
    if _plain(value):
        try:
            return orjson.dumps(value, option=_PLAIN)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: rfc8785 says why it has no form
    return None


def dumps_canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON of ``value``: byte for byte what ``rfc8785.dumps`` writes.

    Plain values take the C encoder (:func:`dumps_plain`); the rest go to
    :mod:`rfc8785`, which raises :class:`rfc8785.CanonicalizationError` for what has
    no canonical form.
    """
    fast = dumps_plain(value)
    return rfc8785.dumps(value) if fast is None else fast


def loads_canonical(data: bytes) -> Any:
    """The JSON value of ``data``, if ``data`` is its RFC 8785 canonical form.

    Raises :class:`InvalidEntry` saying what is wrong otherwise: not UTF-8, not JSON,
    a repeated member name, or another spelling than the canonical one.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEntry("entry is not UTF-8") from None
    try:
        try:
            if not data.isascii() and _ASTRAL.search(data):
                raise _Unusual
            value = _FAST.decode(text)
            same = _ENCODE_ACYCLIC(value).encode("utf-8") == data
        except _Unusual:
            same = rfc8785.dumps(_SLOW.decode(text)) == data
            value = json.loads(text)  # large integers as Python reads them, like elsewhere
    except InvalidEntry:
        raise
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, RecursionError, OverflowError):
        same = False  # a lone surrogate, or a number no double holds
    except ValueError as exc:  # JSONDecodeError
        raise InvalidEntry(f"entry is not JSON: {exc}") from None
    if not same:
        raise InvalidEntry(_why_not_canonical(text))
    return value


class Unproven(Exception):
    """:func:`loads_quick` could not prove the bytes canonical (they may still be)."""


# Sorted keys, and an integer beyond +-(2**53 - 1) raises (RFC 8785 would write a double).
_QUICK = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_NESTED = frozenset((dict, list, float))


def loads_quick(data: bytes) -> Any:
    """The JSON value of ``data`` if a quick check proves it canonical, else :class:`Unproven`.

    Accepts a subset of what :func:`loads_canonical` accepts, with the same value;
    anything it refuses (a repeated name, another spelling, an unusual float,
    a character beyond U+FFFF, an error) must be judged by :func:`loads_canonical`.
    """
    value = loads_sorted(data)
    if not plain_floats(value):
        raise Unproven
    return value


def loads_sorted(data: bytes) -> Any:
    """:func:`loads_quick` but for floats: canonical only if :func:`plain_floats` of it.

    The bytes are what orjson writes of their value with sorted keys, hold no
    integer beyond +-(2**53 - 1) and no character beyond U+FFFF (RFC 8785 sorts
    names by UTF-16 code units); else :class:`Unproven`.
    """
    try:
        value = orjson.loads(data)
        same = orjson.dumps(value, option=_QUICK) == data
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        raise Unproven from None
    if not same or (not data.isascii() and _ASTRAL.search(data)):
        raise Unproven
    return value


def plain_floats(value: Any) -> bool:
    """Whether every float in ``value`` is written the same by RFC 8785 as by ``repr``.

    orjson, ``repr`` and RFC 8785 write the same shortest digits; they differ only in
    exponent form and in a trailing ``.0``, which ``repr`` shows (see :func:`_plain`).
    """
    kind = type(value)
    if kind is dict:
        members: Iterable[Any] = value.values()
    elif kind is list:
        members = value
    else:
        members = (value,)
    for item in members:
        kind = type(item)
        if kind is float:
            text = repr(item)
            if "e" in text or text.endswith(".0") or not -_SAFE < item < _SAFE:
                return False
        elif (kind is dict or kind is list) and not plain_floats(item):
            return False
    return True


def _why_not_canonical(text: str) -> str:
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        counts = Counter(name for name, _ in items)
        repeated.extend(name for name, n in counts.items() if n > 1)
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except ValueError:
        pass
    if repeated:
        names = ", ".join(repr(name) for name in repeated[:3])
        return f"entry repeats the member name {names} in one object (duplicate JSON keys)"
    return "entry bytes are not RFC 8785 canonical JSON"
