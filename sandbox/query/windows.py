"""Window functions over a query's released rows: post-processing, outside the enclave.

``SELECT district, count(*) AS n, rank() OVER (ORDER BY count(*) DESC) AS r,
count(*) * 100.0 / sum(count(*)) OVER () AS share FROM health.claims GROUP BY district``
is answered in two steps:

1. **the query without its windows** (``WindowSplit.inner``): each window's inputs
   (``count(*)``, the keys it partitions or orders by) become hidden outputs
   ``__sbx_w0, …`` beside the query's own outputs; it is checked, run and disclosed as
   any query (``release.prepare``), so every hidden output is an aggregate or a group
   key the guard accepts, noised or held for review as the others;
2. **the windows over its released rows** (``WindowSplit.outer_sql``, over
   ``rewrite.STATS_TABLE``): run in the release database on the disclosed table only,
   they read nothing the release did not show, as any post-processing.

So a window sees the released groups, after suppression and noise: ``sum(count(*))
OVER ()`` is the total of the released counts, and ``rank()`` ranks noisy values (the
docs say so, ``docs/guard.md``).  A window stands only in the released SELECT's list or
its ORDER BY, not inside an aggregate or another window, nor with ``DISTINCT``; its
function is a ranking, offset or aggregate one (``WINDOW_FUNCTIONS``), its offsets and
frame bounds whole numbers.  The query's ORDER BY, LIMIT and OFFSET apply after the
windows (as in SQL), to the outputs by name, position or text
(``grouping_sets.stacked_order``).  Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.query.grouping_sets import output_names, stacked_order

__all__ = [
    "HIDDEN",
    "RULE",
    "WINDOW_FUNCTIONS",
    "Window",
    "WindowSplit",
    "allowed_window_nodes",
    "split_windows",
]

RULE = "guard.window"
#: Hidden outputs of the query without its windows: ``__sbx_w<i>`` (inputs of windows)
#: and ``__sbx_o<i>`` (an output written without a name).
HIDDEN = "__sbx_"
#: Functions a window may compute over the released rows.
_RANKING: tuple[type[exp.Expr], ...] = (
    exp.RowNumber,
    exp.Rank,
    exp.DenseRank,
    exp.PercentRank,
    exp.CumeDist,
    exp.Ntile,
)
_OFFSET: tuple[type[exp.Expr], ...] = (exp.Lag, exp.Lead, exp.FirstValue, exp.LastValue)
_NTH: tuple[type[exp.Expr], ...] = (exp.NthValue,)
_AGGREGATE: tuple[type[exp.Expr], ...] = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
WINDOW_FUNCTIONS: tuple[type[exp.Expr], ...] = (*_RANKING, *_OFFSET, *_NTH, *_AGGREGATE)
#: Arguments of those functions that are whole-number constants, not inputs.
_CONSTANT_ARGS: dict[type[exp.Expr], tuple[str, ...]] = {
    exp.Lag: ("offset", "default"),
    exp.Lead: ("offset", "default"),
}
_BIGINT = 2**63
_PLACE = (
    "window functions (OVER …) are computed over the released rows: write them in the "
    "SELECT list or the ORDER BY of the released (aggregated) SELECT"
)


def _refuse(message: str) -> QueryRefused:
    return QueryRefused(message, rule=RULE)


@dataclass(frozen=True)
class Window:
    """One window of the query: as written, and alone over the released rows."""

    #: The output it stands in.
    output: str
    #: The window as the query wrote it (DuckDB's dialect).
    written: str
    #: ``SELECT <the window> FROM <table>``: the window alone over the inner outputs.
    sql: str
    #: Per released column it reads: (the inner output's name, what it stands for as written).
    inputs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class WindowSplit:
    """The query without its windows, and the windows over its released rows."""

    inner: exp.Select
    #: ``SELECT … FROM <table> [ORDER BY …] [LIMIT …]`` over the inner query's outputs.
    outer_sql: str
    #: The query's output names, in order.
    names: tuple[str, ...]
    #: Per output, the inner output it passes on (None: computed by a window).
    sources: tuple[str | None, ...]
    #: Each window, in the order of the outputs.
    windows: tuple[Window, ...] = ()


def _placed(window: exp.Window, root: exp.Select) -> bool:
    """Whether ``window`` stands in ``root``'s SELECT list or ORDER BY, inside no
    aggregate, window or subquery."""
    node: exp.Expr = window
    while node.parent is not None and node.parent is not root:
        node = node.parent
        if isinstance(node, exp.Window | exp.AggFunc | exp.Query | exp.Subquery | exp.Filter):
            return False
        if isinstance(node, exp.Order) and node.parent is root:
            return True
    return node.parent is root and node.arg_key in ("expressions", "order")


def _whole(node: exp.Expr | None, least: int = 0) -> bool:
    """A whole-number constant from ``least`` up to a BIGINT's largest (or absent)."""
    if node is None:
        return True
    return isinstance(node, exp.Literal) and node.is_int and least <= int(node.name) < _BIGINT


def _check_window(window: exp.Window) -> None:
    function = window.this
    if not isinstance(function, WINDOW_FUNCTIONS):
        name = function.key.upper() if isinstance(function, exp.Expr) else "it"
        raise _refuse(
            f"{name} is not computed over released rows: a window may rank (row_number, "
            "rank, dense_rank, percent_rank, cume_dist, ntile), look at another row (lag, "
            "lead, first_value, last_value, nth_value) or sum, average, count, take the "
            "min or max of released values"
        )
    if isinstance(function, _RANKING) and not isinstance(function, exp.Ntile):
        if any(value for value in function.args.values()):
            raise _refuse(f"{function.key.upper()}() takes no argument: write OVER (ORDER BY …)")
    if isinstance(function, exp.Lag | exp.Lead):
        offset, default = function.args.get("offset"), function.args.get("default")
        if not _whole(offset):
            raise _refuse(f"{function.key.upper()}'s offset is a whole number of rows")
        if default is not None and not isinstance(default, exp.Literal | exp.Null):
            raise _refuse(f"{function.key.upper()}'s default is a constant")
    if isinstance(function, exp.Ntile | exp.NthValue):
        count = function.this if isinstance(function, exp.Ntile) else function.args.get("offset")
        if count is None or not _whole(count, least=1):
            raise _refuse(f"{function.key.upper()} takes a whole number from 1")
    spec = window.args.get("spec")
    if isinstance(spec, exp.WindowSpec):
        if spec.args.get("exclude") is not None:
            # sqlglot's DuckDB writer drops it (a different frame, silently): refused.
            raise _refuse("EXCLUDE in a window frame is not supported: drop it")
        for bound in ("start", "end"):
            value = spec.args.get(bound)
            if isinstance(value, exp.Expr) and not _whole(value):
                raise _refuse("a window frame's bounds are whole numbers of rows")
    if window.args.get("alias") is not None:
        raise _refuse("named windows (WINDOW w AS …) are not supported: write OVER (…)")
    if window.args.get("first") is not None:
        raise _refuse("KEEP (… FIRST/LAST …) is not supported beside a window")


def allowed_window_nodes(root: exp.Expr) -> set[int]:
    """The ids of the nodes a placed window adds (the window, its function, its frame),
    allowed by the parse though no other context allows them; raises if a window stands
    where it cannot be computed over released rows."""
    allowed: set[int] = set()
    for window in root.find_all(exp.Window):
        if not isinstance(root, exp.Select) or not _placed(window, root):
            raise _refuse(_PLACE)
        if root.args.get("distinct"):
            raise _refuse("SELECT DISTINCT with window functions is not supported")
        _check_window(window)
        allowed.update((id(window), id(window.this)))
        spec = window.args.get("spec")
        if spec is not None:
            allowed.add(id(spec))
    return allowed


class _Lifter:
    """Replaces each window-free part of an output that reads data by a hidden output."""

    def __init__(self, passed: dict[str, str]) -> None:
        self.passed = passed  # an output's SQL text -> its inner name
        self.hidden: list[exp.Expr] = []
        self._names: dict[str, str] = {}
        #: Each window over the released rows, as ``window AS "__sbx_v<i>"``.
        self.windows: list[exp.Expr] = []
        #: Each window as written, beside ``windows``.
        self.written: list[exp.Window] = []

    def texts(self) -> dict[str, str]:
        """Each inner output a window may read -> its SQL text as written."""
        texts = {name: text for text, name in self.passed.items()}
        texts.update({name: text for text, name in self._names.items()})
        return texts

    def column(self, node: exp.Expr) -> exp.Expr:
        text = node.sql(dialect="duckdb")
        name = self.passed.get(text) or self._names.get(text)
        if name is None:
            name = f"{HIDDEN}w{len(self.hidden)}"
            self._names[text] = name
            self.hidden.append(exp.alias_(node.copy(), name, quoted=True))
        return exp.column(name, quoted=True)

    def lift(self, node: exp.Expr) -> exp.Expr:
        if node.find(exp.Window) and node.find(exp.Subquery):
            raise _refuse(
                "a total (a subquery) in an output with a window function: release the "
                "total as an output of its own"
            )
        if not node.find(exp.Window):
            reads = node.find(exp.Column, exp.AggFunc, exp.Subquery, exp.Star)
            return self.column(node) if reads is not None else node.copy()
        if isinstance(node, exp.Window):
            return self._window(node)
        out = node.copy()
        for key, value in node.args.items():
            if isinstance(value, exp.Expr):
                out.set(key, self.lift(value))
            elif isinstance(value, list):
                out.set(key, [self.lift(v) if isinstance(v, exp.Expr) else v for v in value])
        return out

    def _window(self, window: exp.Window) -> exp.Expr:
        out = window.copy()
        out.set("this", self._function(window.this))
        partition = window.args.get("partition_by") or []
        out.set("partition_by", [self.lift(p) for p in partition])
        order = window.args.get("order")
        if isinstance(order, exp.Order):
            ordered = []
            for item in order.expressions:
                copy = item.copy()
                copy.set("this", self.lift(item.this))
                ordered.append(copy)
            out.set("order", exp.Order(expressions=ordered))
        name = f"{HIDDEN}v{len(self.windows)}"
        self.windows.append(exp.alias_(out, name, quoted=True))
        self.written.append(window)
        return exp.column(name, quoted=True)

    def _function(self, function: exp.Expr) -> exp.Expr:
        """The window's function with its inputs lifted (its whole-number constants, a
        ``*`` and ntile's count stay as written)."""
        lifted = function.copy()
        if isinstance(function, exp.Ntile):
            return lifted
        constant = _CONSTANT_ARGS.get(type(function), ())
        for key, value in function.args.items():
            if key in constant or (isinstance(function, exp.NthValue) and key != "this"):
                continue
            if isinstance(value, exp.Distinct):
                inside = value.copy()
                inside.set("expressions", [self.lift(v) for v in value.expressions])
                lifted.set(key, inside)
            elif isinstance(value, list):
                lifted.set(key, [self.lift(v) for v in value if isinstance(v, exp.Expr)])
            elif isinstance(value, exp.Expr) and not isinstance(value, exp.Star):
                lifted.set(key, self.lift(value))
        return lifted


def split_windows(root: exp.Expr, table: str) -> WindowSplit | None:
    """The query without its windows and the windows over its released rows (read as
    ``table``); None if ``root`` has no window.  ``root`` has passed the parse
    (``allowed_window_nodes``)."""
    if not isinstance(root, exp.Select) or root.find(exp.Window) is None:
        return None
    allowed_window_nodes(root)  # placement, functions, constants (again: this is run)
    if any(p.find(exp.Columns) for p in root.expressions):
        raise _refuse("COLUMNS(…) beside window functions is not supported: name the columns")
    names = output_names(root)
    written = [
        p.alias for p in root.expressions if isinstance(p, exp.Alias) and p.find(exp.Window) is None
    ]
    if len(set(n.lower() for n in written)) != len(written):
        raise _refuse("two outputs have the same name beside window functions: rename one")
    inner = root.copy()
    for arg in ("order", "limit", "offset"):
        inner.set(arg, None)
    projections: list[exp.Expr] = []
    passed: dict[str, str] = {}
    sources: list[str | None] = []
    for i, projection in enumerate(root.expressions):
        if projection.find(exp.Window) is not None:
            sources.append(None)
            continue
        if isinstance(projection, exp.Alias):
            own = projection.alias
            projections.append(projection.copy())
        else:
            own = f"{HIDDEN}o{i}"
            projections.append(exp.alias_(projection.copy(), own, quoted=True))
        passed.setdefault(projection.unalias().sql(dialect="duckdb"), own)
        sources.append(own)
    lifter = _Lifter(passed)
    outer: list[exp.Expr] = []
    of_output: list[str] = []  # per window, the output it stands in
    for projection, name, source in zip(root.expressions, names, sources, strict=True):
        body = exp.column(source, quoted=True) if source else lifter.lift(projection.unalias())
        outer.append(exp.alias_(body, name, quoted=True))
        of_output.extend([name] * (len(lifter.windows) - len(of_output)))
    if not projections and not lifter.hidden:
        raise _refuse(
            "the windows have no released rows to run over: add a group key or an "
            "aggregate to the SELECT list"
        )
    inner.set("expressions", [*projections, *lifter.hidden])
    # The windows as columns of their own first: a window over released values cannot
    # fail on them; what the outputs compute around them runs under TRY (NULL where it
    # fails), as the release query's expressions do, so no outcome of the run (fail or
    # not) depends on a value the review has not seen.
    windowed = exp.select(exp.Star(), *lifter.windows).from_(exp.table_(table, quoted=True))
    for item in outer:
        body = item.this
        if not isinstance(body, exp.Column):
            item.set("this", exp.Try(this=body))
    select = exp.select(*outer).from_(windowed.subquery("__sbx_windowed"))
    order = stacked_order(
        root,
        names,
        rule=RULE,
        message="beside window functions, ORDER BY names outputs (by name, position or "
        "their own expression): the released rows are sorted after the windows",
    )
    sql = select.sql(dialect="duckdb")
    if order:
        sql = f"SELECT * FROM ({sql}) AS __sbx_windows {order}"
    texts = lifter.texts()
    windows = []
    for output, window, lifted in zip(of_output, lifter.written, lifter.windows, strict=True):
        alone = exp.select(lifted.copy()).from_(exp.table_(table, quoted=True))
        read = dict.fromkeys(c.name for c in lifted.find_all(exp.Column))
        inputs = tuple((n, texts.get(n, n)) for n in read)
        windows.append(Window(output, window.sql(dialect="duckdb"), alone.sql("duckdb"), inputs))
    return WindowSplit(inner, sql, tuple(names), tuple(sources), tuple(windows))
