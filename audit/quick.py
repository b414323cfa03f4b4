"""Proving an entry well formed in microseconds, for verifiers that read every entry.

:meth:`audit.entry.Entry.from_bytes` with ``strict=True`` parses an entry, demands
its exact RFC 8785 form and checks every member: about 20 µs.  A verifier reads
each entry of a log, so it first tries :func:`fields_quick`, which proves the
same of a common entry in a few µs (orjson's parse and sorted re-serialization,
see :func:`audit.canonical.loads_sorted`, then the member checks on their types
at once) or declines.  Declining says nothing: the strict parse then decides and
explains.  Hypothesis properties check that it accepts nothing the strict parse
refuses, and gives the same members.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import orjson

from audit.canonical import Unproven, loads_sorted, plain_floats
from audit.entry import DECISIONS, ENTRY_KEYS, ENTRY_VERSION, _check_time
from audit.errors import InvalidEntry

__all__ = ["fields_pinned", "fields_quick"]

_STR, _NONE = str, type(None)
_ENTRY_TYPES = frozenset(
    (str, str, client, dataset, str, dict, str, request_id, str, str, int, str, str, int)
    for client in (_STR, _NONE)
    for dataset in (_STR, _NONE)
    for request_id in (_STR, _NONE)
)
"""The member types of a well-typed entry, in :data:`ENTRY_KEYS` order."""
_MEMBERS = itemgetter(*ENTRY_KEYS)
_KEYS = frozenset(ENTRY_KEYS)
_AT_DECISION, _AT_DETAILS, _AT_PREV, _AT_SEQ, _AT_TIME, _AT_V = (
    ENTRY_KEYS.index(name) for name in ("decision", "details", "prev", "seq", "time", "v")
)


def fields_quick(canonical: bytes, seq: int, prev: bytes) -> dict[str, Any] | None:
    """The members of ``canonical`` if a quick check proves it a well-formed entry with
    this ``seq`` and ``prev`` (the previous entry's hash); else None.

    Accepts only what ``Entry.from_bytes(canonical, strict=True)`` accepts, with the
    same members (a hypothesis property checks it); None means "not proven", and the
    strict parse must decide.  The checks are those of :meth:`Entry._typed`, done on
    the members' types at once: exact built-in types (so no ``true`` for an integer),
    no empty string among the top-level members.
    """
    try:
        data = loads_sorted(canonical)
    except Unproven:
        return None
    if type(data) is not dict or len(data) != len(ENTRY_KEYS):
        return None
    try:
        values = _MEMBERS(data)  # every key there, and no other (as many as there are keys)
    except KeyError:
        return None
    if (
        tuple(map(type, values)) not in _ENTRY_TYPES
        or values[_AT_SEQ] != seq
        or values[_AT_PREV] != prev.hex()
        or "" in values
        or values[_AT_DECISION] not in DECISIONS
        or values[_AT_V] != ENTRY_VERSION
        or not plain_floats(values[_AT_DETAILS])  # the only member that may hold a float
    ):
        return None
    try:
        _check_time(values[_AT_TIME])
    except InvalidEntry:
        return None
    return data


def fields_pinned(canonical: bytes, seq: int, prev: bytes) -> dict[str, Any] | None:
    """The members of an entry a strict check proved well formed before, if it continues
    the chain here (this ``seq`` and ``prev``); else None.

    Parsed, not checked again: only for entries whose bytes the caller pins by a
    chain head it compares afterwards (see :func:`audit.livecheck.verify_store_again`).
    Exactly an entry's members, or None: the caller reads them (an entry rewritten in
    the store without one is reported by the strict path, never a ``KeyError``).
    """
    try:
        data = orjson.loads(canonical)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or len(data) != len(ENTRY_KEYS) or not data.keys() >= _KEYS:
        return None
    if data["seq"] != seq or data["prev"] != prev.hex():
        return None
    return data
