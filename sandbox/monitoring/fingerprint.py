"""A query's predicate structure, as the detectors read it: hashes, never values.

Computed by the monitor from the ``normalized_sql`` an audit entry already records
(sqlglot's canonical text: upper-case keywords, ``<>``, ``NOT x IS NULL``), with a
tokenizer and no parse: tens of microseconds per query, off the query's own thread.
For one query:

- ``shape``: a hash of the query without its WHERE and FILTER clauses (what it
  computes and over what);
- ``template``: a hash of the query with every literal replaced by ``?`` (two
  queries that differ only in constants share it);
- ``sets``: for each aggregate, the conjuncts of the predicate it is computed under
  (its SELECT's WHERE, its FILTER, and the WHERE of every source that does not
  aggregate: a derived table's or a CTE's), each a short hash; a conjunct that
  excludes (``NOT c``, ``a <> b``, ``NOT x IN (...)``) starts with ``!``.
  ``NOT x IS NULL`` is not an exclusion (it drops missing values, not entities).

Nothing here can echo a data value: every constant ends up inside a hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["predicate_fingerprint"]

_HASH_CHARS = 12
_TOKEN = re.compile(
    r"'(?:[^']|'')*'"  # a string literal
    r'|"(?:[^"]|"")*"'  # a quoted identifier
    r"|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?"  # a number
    r"|[A-Za-z_][A-Za-z0-9_$]*"  # a word
    r"|<>|!=|>=|<=|::|\|\||\S"
)
_ENDS = frozenset(
    {
        "GROUP",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "HAVING",
        "QUALIFY",
        "WINDOW",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "FETCH",
    }
)
_AGGREGATES = frozenset(
    {
        "COUNT",
        "SUM",
        "AVG",
        "MIN",
        "MAX",
        "MEDIAN",
        "QUANTILE",
        "QUANTILE_CONT",
        "QUANTILE_DISC",
        "PERCENTILE_CONT",
        "PERCENTILE_DISC",
        "STDDEV",
        "STDDEV_POP",
        "STDDEV_SAMP",
        "VARIANCE",
        "VAR_POP",
        "VAR_SAMP",
        "COUNT_IF",
        "MODE",
        "APPROX_COUNT_DISTINCT",
        "ANY_VALUE",
        "ARG_MAX",
        "ARG_MIN",
        "BOOL_AND",
        "BOOL_OR",
        "LIST",
        "STRING_AGG",
        "AVG_IF",
        "SUM_IF",
        "ENTROPY",
        "KURTOSIS",
        "SKEWNESS",
        "CORR",
        "COVAR_POP",
        "COVAR_SAMP",
    }
)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def _literal(token: str) -> bool:
    return token[0] == "'" or token[0].isdigit()


@dataclass
class _Select:
    depth: int
    aggregates: bool = False
    where: list[str] = field(default_factory=list)
    filters: list[list[str]] = field(default_factory=list)


def _unwrap(tokens: list[str]) -> list[str]:
    """Drop parentheses around the whole of ``tokens``."""
    while len(tokens) >= 2 and tokens[0] == "(" and tokens[-1] == ")":
        depth = 0
        for k, token in enumerate(tokens):
            depth += (token == "(") - (token == ")")
            if depth == 0 and k < len(tokens) - 1:
                return tokens
        tokens = tokens[1:-1]
    return tokens


def _split_and(tokens: list[str]) -> list[list[str]]:
    """Top-level conjuncts (``BETWEEN a AND b`` stays one)."""
    tokens = _unwrap(tokens)
    parts: list[list[str]] = [[]]
    depth, between = 0, False
    for token in tokens:
        depth += (token == "(") - (token == ")")
        word = token.upper()
        if depth == 0 and word == "BETWEEN":
            between = True
        elif depth == 0 and word == "AND":
            if between:
                between = False
            else:
                parts.append([])
                continue
        parts[-1].append(token)
    out: list[list[str]] = []
    for part in parts:
        inner = _unwrap(part)
        out.extend(_split_and(inner) if inner != part else [part])
    return [p for p in out if p]


def _mark(tokens: list[str]) -> str:
    upper = [t.upper() for t in tokens]
    depth, excludes = 0, False
    for token in upper:
        depth += (token == "(") - (token == ")")
        if depth == 0 and token in ("<>", "!="):
            excludes = True
    if upper and upper[0] == "NOT" and upper[-2:] != ["IS", "NULL"]:
        excludes = True
    return ("!" if excludes else "") + _digest(" ".join(tokens))


def _clause_end(tokens: list[str], start: int) -> int:
    """Where a WHERE clause that starts at ``start`` ends (exclusive)."""
    depth = 0
    for k in range(start, len(tokens)):
        token = tokens[k]
        if token == "(":
            depth += 1
        elif token == ")":
            if depth == 0:
                return k
            depth -= 1
        elif depth == 0 and token.upper() in _ENDS:
            return k
    return len(tokens)


def predicate_fingerprint(normalized_sql: str | Any) -> dict[str, Any]:
    """``{"shape", "template", "sets"}`` of one query's normalized SQL (module text).

    A parsed sqlglot query is normalized first (slower: generating SQL costs about a
    millisecond).
    """
    if not isinstance(normalized_sql, str):
        normalized_sql = normalized_sql.sql(dialect="duckdb", normalize=True)
    tokens = _TOKEN.findall(normalized_sql)
    selects: list[_Select] = []
    latest: dict[int, _Select] = {}
    removed: set[int] = set()
    depth = 0
    k = 0
    while k < len(tokens):
        token = tokens[k]
        word = token.upper()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif word == "SELECT":
            latest[depth] = _Select(depth)
            selects.append(latest[depth])
        elif word in _AGGREGATES and k + 1 < len(tokens) and tokens[k + 1] == "(":
            owner = latest.get(depth)
            if owner is not None:
                owner.aggregates = True
        elif word == "WHERE":
            end = _clause_end(tokens, k + 1)
            clause = [_mark(c) for c in _split_and(tokens[k + 1 : end])]
            in_filter = k >= 2 and tokens[k - 1] == "(" and tokens[k - 2].upper() == "FILTER"
            owner = latest.get(depth - 1 if in_filter else depth)
            if owner is not None:
                (owner.filters.append(clause) if in_filter else owner.where.extend(clause))
            first = k - 2 if in_filter else k
            last = end + 1 if in_filter else end  # FILTER ( WHERE ... ) with its parens
            removed.update(range(first, last))
            k = end
            continue
        k += 1
    shared = sorted({c for s in selects if not s.aggregates for c in s.where})
    sets: list[tuple[str, ...]] = []
    for select in selects:
        if not select.aggregates:
            continue
        base = set(select.where) | set(shared)
        candidates = [tuple(sorted(base))] if select.aggregates else []
        candidates += [tuple(sorted(base | set(f))) for f in select.filters]
        for found in candidates:
            if found not in sets:
                sets.append(found)
    if not sets:
        sets.append(tuple(shared))
    shape = " ".join(t for n, t in enumerate(tokens) if n not in removed)
    template = " ".join("?" if _literal(t) else t for t in tokens)
    return {
        "shape": _digest(shape),
        "template": _digest(template),
        "sets": [list(s) for s in sets[:16]],
    }
