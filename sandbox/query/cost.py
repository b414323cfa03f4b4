"""What a query costs before it runs: rows read, analysis size, string growth.

Pure functions over the parsed tree, **before** qualification: every later stage
(sqlglot's qualify and scope traversal, the guard's walk, the rewrite) re-visits a
CTE at each reference, and DuckDB scans its tables again at each reference.  So a
1 KB query of CTEs that each ``UNION ALL`` ten copies of the one before reads a
table 10,000 times at five levels, and costs the guard ~8x more per level.  This
module computes the *expanded* query in one linear pass (each CTE once, memoized):

* **reads**: per dataset, how many times it is scanned: a dataset reference counts
  1, a CTE reference counts its body's reads, set-operation branches add;
* **rows**: reads x the dataset's row count (the catalog's), the figure the rows
  quota and the tariff are charged on;
* **nodes**: the expanded syntax tree's size (a CTE's body at each reference),
  which bounds the guard's own analysis time;
* **string width**: each string expression's largest output, as column-value copies
  and literal characters; a concatenation adds its parts, every other function keeps
  its widest argument, a CTE's output column keeps its width where it is read.  A
  doubling through CTE chains (``s || s`` of the ``s || s`` before) is refused here
  before DuckDB plans it (its planner folded constant doublings past the memory limit
  and ignored the timeout).

Anything over a limit is refused with ``guard.cost`` (what it would read) or
``guard.too_complex`` (what the analysis would have to walk), in the analyst's
words: the dataset as written, the count, the limit.  Joins are not multiplied here:
the guard allows only declared key joins and refuses self and fan-out joins.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.core.wording import noun

__all__ = ["Cost", "CostLimits", "analyse", "check_cost"]

#: Characters of literal text a string expression may reach (the SQL text itself is
#: shorter; more comes only from doubling).
MAX_LITERAL_CHARS = 100_000


@dataclass(frozen=True, kw_only=True)
class CostLimits:
    """The deployment's bounds (settings ``max_rows_read``, ``max_dataset_reads`` ...)."""

    max_rows_read: int = 200_000_000
    max_dataset_reads: int = 64
    max_expanded_nodes: int = 50_000
    max_ctes: int = 64
    max_scopes: int = 256
    max_string_copies: int = 64

    @classmethod
    def of(cls, settings: Any) -> CostLimits:
        """The limits ``settings`` (a ``Settings``) declare."""
        return cls(
            max_rows_read=settings.max_rows_read,
            max_dataset_reads=settings.max_dataset_reads,
            max_expanded_nodes=settings.max_expanded_nodes,
            max_string_copies=settings.max_string_copies,
        )


@dataclass(frozen=True)
class Cost:
    """The expanded query's size: scans per dataset, rows read, syntax nodes."""

    reads: Mapping[str, int]
    rows: Mapping[str, int]
    nodes: int
    string_copies: int = 0
    literal_chars: int = 0
    ctes: int = 0
    scopes: int = 0

    @property
    def rows_total(self) -> int:
        return sum(self.rows.values())


def check_cost(expression: exp.Expr, row_counts: Mapping[str, int], limits: CostLimits) -> Cost:
    """:func:`analyse`, then refuse what exceeds ``limits``; returns the cost."""
    cost = analyse(expression, row_counts, limits)
    for dataset, reads in cost.reads.items():
        if reads > limits.max_dataset_reads:
            raise QueryRefused(
                f"the query reads {dataset} {reads:,} times (each CTE reference and UNION "
                f"branch reads it again); the limit is {limits.max_dataset_reads:,}: compute "
                "the CTE once and reference it fewer times",
                rule="guard.cost",
            )
    if cost.rows_total > limits.max_rows_read:
        worst = max(cost.rows, key=lambda d: cost.rows[d])
        raise QueryRefused(
            f"the query reads about {cost.rows_total:,} {noun(cost.rows_total, 'row')} "
            f"({cost.reads[worst]:,} reads of {worst}); the limit is "
            f"{limits.max_rows_read:,} rows per query",
            rule="guard.cost",
        )
    if cost.nodes > limits.max_expanded_nodes:
        raise QueryRefused(
            f"the query expands to {cost.nodes:,} syntax nodes once each CTE reference is "
            f"counted; the limit is {limits.max_expanded_nodes:,}: reference CTEs fewer "
            "times or split the query",
            rule="guard.too_complex",
        )
    return cost


def analyse(expression: exp.Expr, row_counts: Mapping[str, int], limits: CostLimits) -> Cost:
    """The expanded cost of ``expression``; ``guard.too_complex`` past the structural bounds.

    Linear in the tree: each CTE body is walked once and its totals reused at each
    reference.  Refuses more CTEs or SELECT scopes than allowed, and string growth past
    the limits (``guard.cost``); the expanded totals are :func:`check_cost`'s to judge.
    """
    ctes = list(expression.find_all(exp.CTE))
    if len(ctes) > limits.max_ctes:
        raise QueryRefused(
            f"the query defines {len(ctes)} CTEs; the limit is {limits.max_ctes}",
            rule="guard.too_complex",
        )
    scopes = sum(1 for _ in expression.find_all(exp.Select))
    if scopes > limits.max_scopes:
        raise QueryRefused(
            f"the query has {scopes} SELECT blocks; the limit is {limits.max_scopes}",
            rule="guard.too_complex",
        )
    expander = _Expander()
    nodes, reads = expander.region(expression)
    for cte in ctes:  # an unreferenced CTE is still analysed once
        nodes += expander.expand(cte)[0] if id(cte) not in expander.memo else 0
    copies, chars = _string_width(expression, limits)
    rows = {d: n * int(row_counts.get(d, 0)) for d, n in reads.items()}
    return Cost(reads, rows, nodes, copies, chars, len(ctes), scopes)


# -- expansion -------------------------------------------------------------------------------


class _Expander:
    """Nodes and reads of query regions, each CTE body computed once."""

    def __init__(self) -> None:
        self.memo: dict[int, tuple[int, dict[str, int]]] = {}
        self.busy: set[int] = set()
        self.by_name: dict[str, list[exp.CTE]] | None = None

    def expand(self, cte: exp.CTE) -> tuple[int, dict[str, int]]:
        key = id(cte)
        if key in self.memo:
            return self.memo[key]
        if key in self.busy:
            raise QueryRefused(
                f"CTE {cte.alias_or_name} refers to itself through other CTEs",
                rule="guard.too_complex",
            )
        self.busy.add(key)
        try:
            self.memo[key] = self.region(cte.this)
        finally:
            self.busy.discard(key)
        return self.memo[key]

    def _anywhere(self, table: exp.Table) -> exp.CTE | None:
        """Out of scope (DuckDB would not bind it): the costliest CTE of that name that does
        not contain the reference, so a scoping rule we do not model never undercounts."""
        if self.by_name is None:
            self.by_name = {}
            for cte in table.root().find_all(exp.CTE):
                self.by_name.setdefault(cte.alias_or_name.lower(), []).append(cte)
        named = self.by_name.get(table.name.lower(), [])
        outside = [cte for cte in named if not _contains(cte, table)]
        return max(outside, key=lambda c: sum(self.expand(c)[1].values()), default=None)

    def region(self, root: exp.Expr) -> tuple[int, dict[str, int]]:
        """Expanded nodes and reads of ``root``, nested WITH bodies excepted (own regions)."""
        nodes = 0
        reads: dict[str, int] = {}
        for node in _walk_skipping_with(root):
            nodes += 1
            if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
                continue
            db = node.args.get("db")
            if db is not None:
                name = f"{db.name.lower()}.{node.name.lower()}"
                reads[name] = reads.get(name, 0) + 1
                continue
            cte = _resolve(node) or self._anywhere(node)
            if cte is None:
                continue  # no CTE of that name at all: DuckDB cannot bind it
            more, inner = self.expand(cte)
            nodes += more
            for name, n in inner.items():
                reads[name] = reads.get(name, 0) + n
        return nodes, reads


def _walk_skipping_with(root: exp.Expr) -> Iterator[exp.Expr]:
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in node.iter_expressions() if not isinstance(c, exp.With))


def _contains(outer: exp.Expr, inner: exp.Expr) -> bool:
    node: exp.Expr | None = inner
    while node is not None:
        if node is outer:
            return True
        node = node.parent
    return False


def _resolve(table: exp.Table) -> exp.CTE | None:
    """The CTE a bare table name refers to: the nearest enclosing WITH that defines it,
    and within a CTE's own WITH only the CTEs before it (non-recursive scoping)."""
    name = table.name.lower()
    node: exp.Expr = table
    skip: exp.With | None = None
    while node.parent is not None:
        parent = node.parent
        if isinstance(parent, exp.With) and isinstance(node, exp.CTE):
            before = parent.expressions[: parent.expressions.index(node)]
            found: list[exp.CTE] = [c for c in before if c.alias_or_name.lower() == name]
            if found:
                return found[-1]
            skip = parent
        else:
            with_ = parent.args.get("with_")
            if isinstance(with_, exp.With) and with_ is not skip and with_ is not node:
                found = [c for c in with_.expressions if c.alias_or_name.lower() == name]
                if found:
                    return found[-1]
        node = parent
    return None


# -- string growth ---------------------------------------------------------------------------


def _string_width(expression: exp.Expr, limits: CostLimits) -> tuple[int, int]:
    """The widest string expression: (column-value copies, literal characters).

    One pass, inner queries first (WITH, then FROM and joins, then the rest), so a
    column read from a CTE or derived table has the width its output was given there
    (by name: an overestimate when two scopes reuse a name, never an underestimate).
    """
    names: dict[str, tuple[int, int]] = {}
    width: dict[int, tuple[int, int]] = {}
    widest = (0, 0)
    for node in _post_order(expression):
        if isinstance(node, exp.Column):
            w = names.get(node.name.lower(), (1, 0))
        elif isinstance(node, exp.Literal):
            w = (0, len(node.name)) if node.is_string else (0, 0)
        elif isinstance(node, exp.Concat | exp.DPipe | exp.ArrayConcat):
            parts = [width.get(id(c), (0, 0)) for c in node.iter_expressions()]
            w = (sum(p[0] for p in parts), sum(p[1] for p in parts))
            _check_width(node, w, limits)
        elif isinstance(node, exp.Repeat | exp.Pad):
            w = _grown(node, width.get(id(node.this), (1, 0)))
            _check_width(node, w, limits)
        elif isinstance(node, exp.Select):
            for projection in node.expressions:
                name = projection.alias_or_name.lower()
                if name:
                    old = names.get(name, (0, 0))
                    new = width.get(id(projection), (1, 0))
                    names[name] = (max(old[0], new[0]), max(old[1], new[1]))
            continue
        else:
            parts = [width.get(id(c), (0, 0)) for c in node.iter_expressions()]
            w = (max((p[0] for p in parts), default=0), max((p[1] for p in parts), default=0))
        width[id(node)] = w
        widest = (max(widest[0], w[0]), max(widest[1], w[1]))
    return widest


def _grown(node: exp.Repeat | exp.Pad, inner: tuple[int, int]) -> tuple[int, int]:
    """``repeat(s, n)`` holds n copies of s; ``lpad(s, n)`` n characters (and s's values).

    Growth functions are not on today's allowlist; should one be added, a count that is
    not a constant is refused here rather than left unbounded.
    """
    count = node.args.get("times") if isinstance(node, exp.Repeat) else node.expression
    if not (isinstance(count, exp.Literal) and count.is_int):
        raise QueryRefused(
            f"{_name(node)} takes a constant count here: its output size must be known "
            "before the query runs",
            rule="guard.cost",
        )
    n = max(0, int(count.name))
    if isinstance(node, exp.Repeat):
        return (inner[0] * n, inner[1] * n)
    return (inner[0], max(inner[1], n))


def _name(node: exp.Expr) -> str:
    if isinstance(node, exp.DPipe):
        return "||"
    if isinstance(node, exp.Pad):
        return "lpad()" if node.args.get("is_left") else "rpad()"
    return f"{node.sql_name().lower()}()" if isinstance(node, exp.Func) else node.key


def _check_width(node: exp.Expr, w: tuple[int, int], limits: CostLimits) -> None:
    what = _name(node)
    if w[0] > limits.max_string_copies:
        raise QueryRefused(
            f"{what} would hold {w[0]:,} copies of column values (a string grown through "
            f"CTEs, derived tables or repeats); the limit is {limits.max_string_copies}",
            rule="guard.cost",
        )
    if w[1] > MAX_LITERAL_CHARS:
        raise QueryRefused(
            f"{what} would build a constant string of {w[1]:,} characters; "
            f"the limit is {MAX_LITERAL_CHARS:,}",
            rule="guard.cost",
        )


_FIRST = {"with_": 0, "from_": 1, "joins": 2}


def _post_order(root: exp.Expr) -> Iterator[exp.Expr]:
    """Children before parents; WITH, FROM and joins before a query's other clauses."""
    stack: list[tuple[exp.Expr, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            yield node
            continue
        stack.append((node, True))
        children = list(node.iter_expressions())
        if isinstance(node, exp.Query):
            children.sort(key=lambda c: _FIRST.get(c.arg_key or "", 3))
        stack.extend((c, False) for c in reversed(children))
