"""Audit entries: the typed record, its canonical JSON (RFC 8785), and fast reading.

An entry's bytes are the RFC 8785 canonical JSON of one flat object with the
keys of :data:`ENTRY_KEYS`.  Canonical JSON of an object is its members sorted by
key, each value canonical, so the bytes can be assembled from separately
canonicalized values.  That is how appends stay cheap under the store's lock:
the caller's thread validates and canonicalizes the fields it knows
(:class:`EntryDraft`), and the writer only splices in ``seq``, ``time`` and
``prev``, which exist only once the lock is held (:func:`seal`).  A test checks
that the result equals ``rfc8785.dumps`` of the whole object.

Verification must run at hundreds of thousands of entries a second.
:func:`audit.quick.fields_quick` proves the common entry canonical and well typed
in a few microseconds (or declines); :meth:`Entry.from_bytes` is the full, strict
parse that decides and explains the rest, and :func:`peek` reads ``seq`` and
``prev`` straight from canonical bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import gmtime, strftime
from typing import Any

import rfc8785

from audit.canonical import dumps_plain, loads_canonical
from audit.errors import InvalidEntry

__all__ = [
    "DECISIONS",
    "ENTRY_KEYS",
    "ENTRY_VERSION",
    "Entry",
    "EntryDraft",
    "Prepared",
    "format_micros",
    "format_time",
    "peek",
    "query_details",
    "seal",
]

ENTRY_VERSION = 1
DECISIONS = ("allow", "deny")
ENTRY_KEYS = (
    "action",
    "actor",
    "client",
    "dataset",
    "decision",
    "details",
    "prev",
    "request_id",
    "role",
    "rule",
    "seq",
    "target",
    "time",
    "v",
)
MAX_DETAILS_BYTES = 64 * 1024
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_REQUIRED_TEXT = ("actor", "role", "action", "target", "rule")
_OPTIONAL_TEXT = ("request_id", "client", "dataset")


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise InvalidEntry("entry times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_micros(micros: int) -> str:
    """:func:`format_time` of the instant ``micros`` microseconds after the Unix epoch.

    The writer stamps every commit; this skips building a ``datetime`` (a third of
    the cost).  A test checks it against :func:`format_time`.
    """
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{strftime('%Y-%m-%dT%H:%M:%S', gmtime(seconds))}.{fraction:06d}Z"


_SAFE = 2**53  # I-JSON (RFC 7493): numbers beyond this do not survive a round trip


def _check_numbers(name: str, value: Any) -> None:
    """Refuse floats outside the I-JSON range: 2.0**60 serializes as an integer that
    RFC 8785 implementations then refuse to read back."""
    if isinstance(value, float):
        if not -_SAFE < value < _SAFE:
            raise InvalidEntry(f"field {name!r} holds a number beyond +-2**53")
    elif isinstance(value, dict):
        for item in value.values():
            _check_numbers(name, item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_numbers(name, item)


@functools.lru_cache(maxsize=4096)
def _canonical_text(value: str | None) -> bytes:
    """Canonical JSON of a short text field; actors, roles, rules repeat, so it is cached."""
    try:
        return dumps_plain(value) or rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidEntry(f"text cannot be canonical JSON: {exc}") from None


def _fresh_text(value: str | None) -> bytes:
    """Canonical JSON of a text field that seldom repeats (request ids, targets).

    Printable ASCII without a quote or a backslash needs no escape in RFC 8785, so it
    is only quoted; anything else goes through :func:`_canonical_text`, whose cache
    such values would only churn.
    """
    if (
        value is not None
        and value.isascii()
        and value.isprintable()
        and '"' not in value
        and "\\" not in value
    ):
        return b'"%b"' % value.encode("ascii")
    return _canonical_text(value)


def _canonical(name: str, value: Any) -> bytes:
    fast = dumps_plain(value)  # plain values hold no float beyond +-2**53
    if fast is not None:
        return fast
    try:
        if isinstance(value, dict):
            _check_numbers(name, value)
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, RecursionError) as exc:
        raise InvalidEntry(f"field {name!r} cannot be canonical JSON: {exc}") from None


def _check_fields(fields: Mapping[str, Any]) -> None:
    """The rules every entry's caller-given members obey (a draft's and a parsed entry's)."""
    for name in _REQUIRED_TEXT:
        value = fields[name]
        if not isinstance(value, str) or not value:
            raise InvalidEntry(f"{name} must be a non-empty string")
    for name in _OPTIONAL_TEXT:
        value = fields[name]
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidEntry(f"{name} must be a non-empty string or None")
    decision = fields["decision"]
    if decision not in DECISIONS:
        raise InvalidEntry(f"decision must be one of {DECISIONS}, not {decision!r}")
    if not isinstance(fields["details"], Mapping):
        raise InvalidEntry("details must be a JSON object")


@functools.lru_cache(maxsize=4096)
def _check_time(time: str) -> None:
    """Raise unless ``time`` is exactly the entry time form and a real moment (cached:
    the entries of one commit share their time)."""
    if not _TIME.fullmatch(time):
        raise InvalidEntry("time must be RFC 3339 UTC: 2026-01-02T03:04:05.000006Z")
    try:
        datetime.fromisoformat(time)  # the form is exact; is it a real moment?
    except ValueError:
        raise InvalidEntry(f"time {time} is not a valid date and time") from None


@dataclass(frozen=True, kw_only=True)
class EntryDraft:
    """What the caller says about an event; the store adds seq, time and prev.

    ``dataset`` is the dataset the event concerns (auditors filter on it); it
    defaults to the id in a ``dataset:<id>`` target.
    """

    actor: str
    role: str
    action: str
    target: str
    decision: str
    rule: str
    request_id: str | None = None
    client: str | None = None
    dataset: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self.__dict__)
        if self.dataset is None and self.target.startswith("dataset:"):
            object.__setattr__(self, "dataset", self.target.removeprefix("dataset:") or None)

    def prepare(self) -> Prepared:
        """Canonicalize every field this draft fixes; raises :class:`InvalidEntry`.

        The result is the entry's canonical bytes cut where the store-assigned
        members (``prev``, ``seq``, ``time``, ``v``) go, so sealing is one join.
        """
        given = self.details
        details = _canonical("details", given if type(given) is dict else dict(given))
        if len(details) > MAX_DETAILS_BYTES:
            raise InvalidEntry(f"details exceed {MAX_DETAILS_BYTES} bytes of canonical JSON")
        text = _canonical_text
        # Members in ENTRY_KEYS order (every key is ASCII, so that is RFC 8785's order),
        # cut where prev, seq, time and v go; the assertion below the class checks it.
        return Prepared(
            b"".join(
                (
                    b'{"action":', text(self.action),
                    b',"actor":', text(self.actor),
                    b',"client":', text(self.client),
                    b',"dataset":', text(self.dataset),
                    b',"decision":', text(self.decision),
                    b',"details":', details, b",",
                )
            ),
            b"".join(
                (
                    b'"request_id":', _fresh_text(self.request_id),
                    b',"role":', text(self.role),
                    b',"rule":', text(self.rule), b",",
                )
            ),
            b'"target":' + _fresh_text(self.target) + b",",
            b"",
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Prepared:
    """A draft's canonical members, split around the members the store assigns."""

    before_prev: bytes
    before_seq: bytes
    before_time: bytes
    before_v: bytes


assert ENTRY_KEYS == (
    *("action", "actor", "client", "dataset", "decision", "details", "prev"),
    *("request_id", "role", "rule", "seq", "target", "time", "v"),
), "EntryDraft.prepare spells out this order"


def seal(prepared: Prepared, *, seq: int, time: str, prev: bytes) -> bytes:
    """The entry's canonical bytes: the prepared draft plus the store-assigned members."""
    return b"".join(
        (
            prepared.before_prev,
            b'"prev":"',
            prev.hex().encode("ascii"),
            b'",',
            prepared.before_seq,
            b'"seq":',
            str(seq).encode("ascii"),
            b",",
            prepared.before_time,
            b'"time":"',
            time.encode("ascii"),
            b'",',
            prepared.before_v,
            b'"v":%d}' % ENTRY_VERSION,
        )
    )


def peek(canonical: bytes) -> tuple[int, bytes]:
    """``(seq, prev)`` read from canonical entry bytes without parsing the JSON.

    Safe on canonical entries: every member after ``prev`` is a string, a number
    or null, and a canonical string cannot hold an unescaped quote, so the last
    ``,"prev":"`` is the top-level one.  Raises :class:`InvalidEntry` otherwise.
    """
    p = canonical.rfind(b',"prev":"')
    if p < 0 or canonical[p + 73 : p + 75] != b'",':
        raise InvalidEntry("entry has no well-formed prev member")
    try:
        prev = bytes.fromhex(canonical[p + 9 : p + 73].decode("ascii"))
    except ValueError:
        raise InvalidEntry("entry prev is not hex") from None
    s = canonical.find(b',"seq":', p + 73)
    end = canonical.find(b",", s + 7)
    digits = canonical[s + 7 : end]
    if s < 0 or end < 0 or not digits.isdigit():
        raise InvalidEntry("entry has no well-formed seq member")
    return int(digits), prev


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One recorded event, parsed from its canonical bytes (which stay authoritative)."""

    seq: int
    time: str
    prev: str
    actor: str
    role: str
    action: str
    target: str
    dataset: str | None
    decision: str
    rule: str
    request_id: str | None
    client: str | None
    details: dict[str, Any]
    v: int = ENTRY_VERSION

    @classmethod
    def from_bytes(cls, canonical: bytes, *, strict: bool = False) -> Entry:
        """Parse and type-check; ``strict`` also demands the exact canonical form.

        Strict parsing refuses duplicate member names too: the bytes a verifier hashes
        must say one thing to every reader (see :mod:`audit.canonical`).
        """
        if strict:
            data = loads_canonical(canonical)
        else:
            try:
                data = json.loads(canonical)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidEntry(f"entry is not JSON: {exc}") from None
        if not isinstance(data, dict) or tuple(sorted(data)) != ENTRY_KEYS:
            raise InvalidEntry("entry does not have exactly the members of a version 1 entry")
        return cls._typed(data)

    @classmethod
    def _typed(cls, data: dict[str, Any]) -> Entry:
        if type(data["v"]) is not int or data["v"] != ENTRY_VERSION:  # ``true == 1`` in Python
            raise InvalidEntry(f"entry version {data['v']!r} is not {ENTRY_VERSION}")
        if not isinstance(data["seq"], int) or isinstance(data["seq"], bool) or data["seq"] < 0:
            raise InvalidEntry("seq must be a non-negative integer")
        prev = data["prev"]
        if not isinstance(prev, str) or len(prev) != 64 or prev.strip("0123456789abcdef"):
            raise InvalidEntry("prev must be 64 lowercase hex digits")
        time = data["time"]
        if not isinstance(time, str):
            raise InvalidEntry("time must be RFC 3339 UTC: 2026-01-02T03:04:05.000006Z")
        _check_time(time)
        _check_fields(data)
        # ``data`` holds exactly the fields (checked by the caller): fill the frozen
        # instance directly, as its generated __init__ would, without its per-field cost.
        entry = object.__new__(cls)
        entry.__dict__.update(data)
        return entry

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ENTRY_KEYS}


def query_details(
    *,
    sql: str,
    result_digest: str,
    rows_released: int,
    groups_suppressed: int,
    duration_ms: int,
    budget_spent: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``details`` of a query entry: normalized SQL with its SHA-256, and the outcome."""
    return {
        "sql": sql,
        "sql_sha256": hashlib.sha256(sql.encode("utf-8")).hexdigest(),
        "result_digest": result_digest,
        "rows_released": rows_released,
        "groups_suppressed": groups_suppressed,
        "budget_spent": budget_spent,
        "duration_ms": duration_ms,
        **extra,
    }
