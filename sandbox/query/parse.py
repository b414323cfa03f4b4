"""First stage of the guard: one SELECT, known syntax only, registered datasets only.

Pure functions over the SQL text.  Anything the parser produces that is not on
the allowlist below is refused by name: a statement kind, a table function, a
file path, an expression type.  Refusals quote the operator's own SQL
(a table or function name) at most, never a data value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from sandbox.core.errors import QueryRefused
from sandbox.query.comoments import PAIR_AGGREGATES
from sandbox.query.dialects import alternatives, respell, top_to_limit
from sandbox.query.grouping_sets import GROUPING, grouping_sets
from sandbox.query.nodes import AGGREGATES, EXPRESSION_KINDS, QUANTILES, Kind
from sandbox.query.spelling import called, describe, written_name
from sandbox.query.stacked import stacked_as_grouped
from sandbox.query.windows import allowed_window_nodes, split_windows

__all__ = [
    "AGGREGATES",
    "ALLOWED_NODES",
    "NODE_KINDS",
    "RECORD_VALUE_AGGREGATES",
    "Parsed",
    "attempted_sql",
    "parse_query",
]


#: Aggregates that return (or reveal) one record's value: refused but on dimension columns.
RECORD_VALUE_AGGREGATES: tuple[type[exp.Expression], ...] = (
    exp.Min,
    exp.Max,
    exp.First,
    exp.Last,
    exp.AnyValue,
    exp.ArgMin,
    exp.ArgMax,
    exp.ArrayAgg,
    exp.GroupConcat,
    exp.Mode,
    exp.Median,
    exp.Quantile,
    exp.PercentileCont,
    exp.PercentileDisc,
    exp.ApproxTopK,
    exp.ApproxQuantile,
)

#: Every expression type the guard handles, with its kind (sandbox/query/nodes.py).
NODE_KINDS: dict[type[exp.Expr], Kind] = {
    **EXPRESSION_KINDS,
    **dict.fromkeys(
        (*AGGREGATES, *RECORD_VALUE_AGGREGATES, *PAIR_AGGREGATES, exp.Filter), Kind.AGGREGATE
    ),
}

#: The syntactic allowlist: exactly the node types the guard has a rule for.
ALLOWED_NODES: frozenset[type[exp.Expr]] = frozenset(NODE_KINDS)


#: What sqlglot makes of a bare word or expression at the top (``CHECKPOINT``, ``1+1``).
_NOT_STATEMENTS: tuple[type[exp.Expr], ...] = (
    exp.Condition,
    exp.Alias,
    exp.Identifier,
    exp.Star,
    exp.Paren,
)


@dataclass(frozen=True)
class Parsed:
    """A query that passed the syntactic allowlist, with the datasets it names."""

    expression: exp.Query
    datasets: tuple[str, ...]
    cte_names: frozenset[str]
    sql: str = ""
    """The text as the analyst wrote it (refusals name their functions as written)."""
    sets: tuple[exp.Select, ...] = ()
    """With ``ROLLUP``, ``CUBE`` or ``GROUPING SETS``: one plain query per grouping set
    (``grouping_sets.py``), each released on its own and stacked (``release.prepare``)."""

    @cached_property
    def normalized_sql(self) -> str:
        return self.expression.sql(dialect="duckdb", normalize=True, pretty=False)

    @cached_property
    def calls(self) -> tuple[str, ...]:
        """The function names the text calls, as written."""
        return called(self.sql)

    def written(self, func: exp.Expr) -> str:
        """The name the analyst wrote for ``func`` (``quantile_cont``, not ``percentile_cont``)."""
        name = written_name(func, self.calls)
        if name is not None:
            return name
        return func.sql_name().lower() if isinstance(func, exp.Func) else func.key


def attempted_sql(sql: str, *, max_length: int) -> dict[str, str]:
    """What the audit records of SQL that was refused: the operator's own text, normalized.

    ``normalized_sql`` (the form an allowed query records, statements joined by ``;``) if
    the text parses, else ``sql``: the text as sent, cut at ``max_length`` characters (the
    deployment's ``max_sql_length``).
    ``query_sha256`` hashes the normalized form, or the whole text, so a refusal and a
    release of the same query carry the same hash.  Never raises.
    """
    if len(sql) <= max_length:
        try:
            statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
            normalized = "; ".join(
                s.sql(dialect="duckdb", normalize=True, pretty=False) for s in statements
            )
            if any(isinstance(s, _NOT_STATEMENTS) for s in statements):
                normalized = ""  # what sqlglot made of a typo is not what was written
        except Exception:  # any parser failure: record the text as sent
            normalized = ""
        if normalized:
            digest = hashlib.sha256(normalized.encode()).hexdigest()
            return {"normalized_sql": normalized, "query_sha256": digest}
    return {"sql": sql[:max_length], "query_sha256": hashlib.sha256(sql.encode()).hexdigest()}


def _drop_comment_meta(root: exp.Expr) -> None:
    """Drop the query's comments, and every node's meta.

    The analysis marks nodes through meta (totals, rollup stages, entity joins, expanded
    columns); the query text must never be able to set such a mark (sqlglot reads
    ``/* sqlglot.meta key */`` comments into meta).  Closed by construction: all of it
    goes, whatever its keys, and the comments go too, so SQL generated from the tree and
    parsed again cannot bring one back.  The parser's positions (line, column, offsets)
    go with it: no message names a position (``guard.unresolved_message`` drops the one
    sqlglot's resolver writes), and every copy of the tree (dozens per query) would
    otherwise deep-copy a dict for each node that has them, about a fifth of the
    analysis's time on a small query.
    """
    for node in root.walk():
        node.comments = None
        node._meta = None  # the attribute, not ``meta``, which would create an empty dict


def _refuse(rule: str, message: str) -> QueryRefused:
    return QueryRefused(message, rule=rule)


def parse_query(sql: str, *, max_length: int, written: str | None = None) -> Parsed:
    """Parse ``sql`` as exactly one allowlisted SELECT; return the datasets it names.

    ``max_length`` is the deployment's ``max_sql_length``: no default, so no path can
    forget it.  Other dialects' spellings are read as DuckDB's where unambiguous
    (``sandbox/query/dialects.py``); ``written`` is then the analyst's own text.
    """
    if len(sql) > max_length:
        raise _refuse("guard.sql_length", f"the SQL text is longer than {max_length} characters")
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except (ParseError, TokenError) as exc:
        as_limit = top_to_limit(sql)  # T-SQL's SELECT TOP n
        if as_limit is not None:
            return parse_query(as_limit, max_length=max(max_length, len(as_limit)), written=sql)
        where = ""
        errors = getattr(exc, "errors", None) or []
        if errors and errors[0].get("line") is not None:
            where = f" at line {errors[0]['line']}, column {errors[0]['col']}"
        raise _refuse("guard.syntax", f"the SQL does not parse{where}") from None
    except RecursionError:
        raise _refuse("guard.nesting", _NESTING_MESSAGE) from None
    except Exception:  # the parser's own failure (``var_map(x)`` raises IndexError)
        raise _refuse("guard.syntax", "the SQL does not parse") from None
    if len(statements) != 1:
        raise _refuse(
            "guard.single_statement", f"exactly one statement is allowed, got {len(statements)}"
        )
    (root,) = statements
    _drop_comment_meta(root)
    if not isinstance(root, exp.Select | exp.Union | exp.Except | exp.Intersect):
        if isinstance(root, exp.Column) and not root.table:
            # One bare word: a statement sqlglot does not know (``CHECKPOINT``).  Not echoed.
            raise _refuse("guard.statement", "only SELECT queries are allowed, not that statement")
        if isinstance(root, _NOT_STATEMENTS):
            # A stray expression (``hello world``, ``1 + 1``): not a statement at all.
            raise _refuse("guard.syntax", "the SQL is not a statement: write a SELECT query")
        name = "statement" if isinstance(root, exp.Command) else root.key.upper()
        word = str(root.this).split()[0].upper() if isinstance(root, exp.Command) else name
        raise _refuse("guard.statement", f"only SELECT queries are allowed, not {word}")
    if _depth(root) > MAX_DEPTH:
        raise _refuse("guard.nesting", _NESTING_MESSAGE)
    if isinstance(root, exp.Union):
        root = stacked_as_grouped(root) or root
    top = root.args.get("group") if isinstance(root, exp.Select) else None
    for node in root.find_all(*GROUPING):
        if node.parent is not top or top is None:
            raise _refuse(
                "guard.grouping_sets",
                f"{describe(node, sql)} is read only in the GROUP BY of the released SELECT "
                "(each grouping set is released as a query of its own)",
            )
    _respelled_keeping_names(root)
    # A window over the released rows (windows.py): the window, its function and its
    # frame are allowed there and nowhere else; any other window is refused here.
    # Names as written (the trees walked below may hold the sandbox's own).
    if any(i.name.startswith("__") for i in root.find_all(exp.Identifier)):
        raise _refuse(
            "guard.reserved_name",
            "names starting with '__' are reserved for the sandbox's own rewrite",
        )
    windowed = allowed_window_nodes(root) if root.find(exp.Window) else set()
    sets = grouping_sets(root)
    # With grouping sets, each set's query and the ORDER BY and LIMIT its rows share.
    # Beside windows, the sets are those of the query without them (``split_windows``:
    # the windows run over the stacked released rows), and each window over them.
    unwindowed = split_windows(root, "__sbx_stats") if sets and windowed else None
    checked = grouping_sets(unwindowed.inner) if unwindowed is not None else sets
    outer = [root.args[a] for a in ("order", "limit", "offset") if root.args.get(a)]
    if unwindowed is not None:
        outer += [p for p in root.expressions if p.find(exp.Window)]
    trees = [*checked, *outer]
    for node in (n for tree in (trees if sets else [root]) for n in tree.walk()):
        if id(node) in windowed:
            continue
        if (
            unwindowed is not None
            and isinstance(node, exp.Grouping)
            and node.find_ancestor(exp.Window)
        ):
            continue  # a window's input: a hidden output of each set's query (checked there)
        if isinstance(node, exp.Window):
            raise _refuse("guard.window", "window functions (OVER ...) are not allowed here")
        if isinstance(node, exp.Columns):
            _check_columns(node, root)
            continue
        if isinstance(node, exp.Exists):
            raise _refuse("guard.subquery_predicate", "subqueries are allowed only in FROM")
        if isinstance(node, exp.Placeholder):
            raise _refuse("guard.placeholder", "query parameters are not supported")
        if isinstance(node, exp.TableAlias) and node.args.get("columns"):
            raise _refuse(
                "guard.alias_columns",
                "column lists in aliases (AS t(a, b)) are not allowed: alias each column",
            )
        if isinstance(node, exp.Var) and not _known_unit(node):
            raise _refuse("guard.syntax_element", "a bare word where a date part is expected")
        if type(node) not in ALLOWED_NODES:
            raise _refuse(
                "guard.function" if isinstance(node, exp.Func) else "guard.syntax_element",
                f"{describe(node, sql)} is not on the allowlist{_hint(node)}",
            )
    ctes: set[str] = set()
    for with_ in root.find_all(exp.With):
        if with_.args.get("recursive"):
            raise _refuse("guard.recursive_cte", "recursive CTEs are not allowed")
        ctes.update(cte.alias_or_name.lower() for cte in with_.expressions)
    datasets: list[str] = []
    for table in root.find_all(exp.Table):
        datasets_of = _table_dataset(table, ctes)
        if datasets_of and datasets_of not in datasets:
            datasets.append(datasets_of)
    if not datasets:
        raise _refuse("guard.no_dataset", "the query reads no registered dataset")
    return Parsed(
        root, tuple(datasets), frozenset(ctes), sql if written is None else written, sets=sets
    )


def _hint(node: exp.Expr) -> str:
    """For a function other dialects read in several ways, the DuckDB forms to choose from."""
    if isinstance(node, exp.Array) and isinstance(node.parent, QUANTILES):
        return ": a quantile takes one constant; write one output per quantile, e.g. " + (
            "quantile_cont(x, 0.25), quantile_cont(x, 0.5), quantile_cont(x, 0.75)"
        )
    forms = alternatives(node) if isinstance(node, exp.Anonymous) else ()
    if len(forms) > 1:
        return f" (other SQL dialects disagree on its meaning): write {' or '.join(forms)}"
    return ""


def _check_columns(node: exp.Columns, root: exp.Expression) -> None:
    """``COLUMNS('regex')`` or ``COLUMNS(*)``, unaliased, in the released SELECT list only.

    The guard expands it against the sources' columns before any rule runs, so each
    column it stands for is checked like a named one.  Lambdas, unpacking, aliases and
    positional GROUP BY (whose numbers would shift with the expansion) are refused.
    """
    arg = node.this
    literal = isinstance(arg, exp.Literal) and arg.is_string
    modified = isinstance(arg, exp.Star) and any(
        arg.args.get(a) for a in ("except_", "replace", "rename", "ilike")
    )
    if not (literal or isinstance(arg, exp.Star)) or node.args.get("unpack") or modified:
        raise _refuse(
            "guard.columns_expression", "COLUMNS(...) takes a regular expression string or *"
        )
    projection: exp.Expr = node
    while projection.parent is not root and projection.parent is not None:
        projection = projection.parent
    if not isinstance(root, exp.Select) or projection.arg_key != "expressions":
        raise _refuse(
            "guard.columns_expression",
            "COLUMNS(...) is allowed only in the outermost SELECT list",
        )
    if isinstance(projection, exp.Alias) or len(list(projection.find_all(exp.Columns))) > 1:
        raise _refuse(
            "guard.columns_expression",
            "a COLUMNS(...) output cannot be aliased or combined with another COLUMNS(...)",
        )
    first = next(i for i, p in enumerate(root.expressions) if p.find(exp.Columns)) + 1
    group, order = root.args.get("group"), root.args.get("order")
    keys = [
        *(group.expressions if group else []),
        *(o.this for o in (order.expressions if order else [])),
    ]
    positions = [k for k in keys if isinstance(k, exp.Literal)]
    if any(not k.is_int or int(k.name) >= first for k in positions):
        raise _refuse(
            "guard.columns_expression",
            "GROUP BY or ORDER BY positions at or after a COLUMNS(...) output would shift "
            "with its expansion: name the columns (or use GROUP BY ALL)",
        )


#: Deepest expression tree the guard accepts.  Every later stage (qualification, lineage,
#: rewrite, SQL generation) recurses over the tree; bounding it here keeps them all far
#: from Python's recursion limit, so deep nesting is a refusal, never a crash.
MAX_DEPTH = 200
_NESTING_MESSAGE = f"the query nests deeper than {MAX_DEPTH} levels"


def _respelled_keeping_names(root: exp.Expr) -> None:
    """``respell`` the query, each unaliased output it changes named as it was written.

    ``SELECT count_if(c), corr(x, y)`` is released under the names ``COUNT_IF(c)`` and
    ``CORR(x, y)``, as any other unaliased expression is under its SQL, not under the
    text of the FILTER form or the sums it is computed as.
    """
    outputs = root.expressions if isinstance(root, exp.Select) else []
    before = [p.sql(dialect="duckdb") for p in outputs]
    respell(root)
    after = root.expressions if isinstance(root, exp.Select) else []
    if len(after) != len(before):
        return  # outputs added or merged (a star, COLUMNS): left as respelled
    for projection, written in zip(after, before, strict=True):
        bare = isinstance(projection, exp.Alias | exp.Column | exp.Star)
        if not bare and projection.sql(dialect="duckdb") != written:
            projection.replace(exp.alias_(projection.copy(), written, quoted=True))


def _depth(root: exp.Expression) -> int:
    """The depth of the expression tree, computed without recursion."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.iter_expressions())
    return deepest


_UNITS = frozenset(
    "year years quarter quarters month months week weeks day days hour hours minute minutes "
    "second seconds millisecond milliseconds microsecond microseconds dow doy epoch isodow "
    "isoyear decade century millennium".split()
)


def _known_unit(node: exp.Var) -> bool:
    """A Var is only acceptable as a date part of EXTRACT, DATE_TRUNC or INTERVAL."""
    parent = node.parent
    return node.name.lower() in _UNITS and isinstance(
        parent, exp.Extract | exp.TimestampTrunc | exp.DateTrunc | exp.Interval | exp.DateDiff
    )


def _table_dataset(table: exp.Table, ctes: set[str]) -> str | None:
    if not isinstance(table.this, exp.Identifier):
        raise _refuse("guard.table_function", "table functions are not allowed in FROM")
    if table.args.get("catalog") is not None:
        raise _refuse("guard.table", "three-part table names are not allowed")
    name = table.name.lower()
    db = table.args.get("db")
    if db is None:
        if name in ctes:
            return None
        raise _refuse(
            "guard.table",
            f"table '{table.name}' is not a dataset: name datasets as domain.table",
        )
    if not isinstance(db, exp.Identifier):
        raise _refuse("guard.table", "the dataset's domain must be a plain name")
    return f"{db.name.lower()}.{name}"
