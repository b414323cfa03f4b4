"""Other SQL dialects' spellings, read as DuckDB's where the meaning is unambiguous.

Analysts write what their last database taught them: ``SELECT TOP 10``,
``std(x)``, ``var(x)``, ``date_part('year', d)``.  DuckDB (or sqlglot's DuckDB
reader) does not know some of these, so a strict guard would refuse ordinary
analysis.  Here a function sqlglot reads as unknown (``Anonymous``) in DuckDB is
read again by sqlglot's other dialects:

- if every dialect that knows it makes the same DuckDB expression of it, that is
  what the analyst meant (``std`` is MySQL's population standard deviation;
  ``date_part`` is ``extract`` everywhere);
- if they disagree (``isnull(x)`` is ``x IS NULL`` in MySQL and ``coalesce`` in
  T-SQL), it is left alone, and the refusal names the DuckDB forms to choose from.

Only the function's name and its literal arguments are read in the other
dialect; its other arguments stay the DuckDB expressions the analyst wrote, so no
operator changes meaning (``||`` is OR in MySQL).  A few spellings no sqlglot
dialect knows but whose meaning is fixed (T-SQL's ``var``, ``varp``, ``stdevp``)
are listed here.  Pure functions.
"""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel
from sqlglot.tokens import TokenType

from sandbox.query.comoments import WRITTEN_AS, as_moments
from sandbox.query.conditional import as_filters, number_is
from sandbox.query.merge_source import projecting_source
from sandbox.query.normalize import normalize

__all__ = ["DIALECTS", "alternatives", "respell", "top_to_limit"]

#: The dialects consulted, in order.
DIALECTS = (
    "mysql",
    "tsql",
    "postgres",
    "snowflake",
    "oracle",
    "bigquery",
    "spark",
    "presto",
    "trino",
    "redshift",
    "sqlite",
    "clickhouse",
)

#: Spellings with one meaning that sqlglot's dialects do not know: T-SQL's aggregates, and
#: DuckDB's own ``mean`` (an alias of ``avg``) that sqlglot's DuckDB reader does not know.
_FIXED = {"var": "var_samp", "varp": "var_pop", "stdevp": "stddev_pop", "mean": "avg"}

_PLACEHOLDER = "sbx_arg"


def _template(node: exp.Anonymous) -> tuple[str, tuple[str, ...]] | None:
    """The call with every non-literal argument a placeholder: (name, argument texts)."""
    name = str(node.this)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return None
    args = []
    for i, arg in enumerate(node.expressions):
        if isinstance(arg, exp.Literal):
            args.append(arg.sql(dialect="duckdb"))
        else:
            args.append(f"{_PLACEHOLDER}{i}")
    return name.lower(), tuple(args)


def _read(sql: str, dialect: str) -> exp.Expr | None:
    try:
        select = sqlglot.parse_one(f"SELECT {sql}", read=dialect, error_level=ErrorLevel.IGNORE)
    except Exception:  # this dialect does not read it: it has no say
        return None
    if not isinstance(select, exp.Select) or len(select.expressions) != 1:
        return None
    node = select.expressions[0]
    if isinstance(node, exp.Extract) and isinstance(node.this, exp.Literal):
        # ``extract('year' FROM d)`` is ``extract(year FROM d)``: one meaning, one form
        node.set("this", exp.Var(this=node.this.name.upper()))
    return None if isinstance(node, exp.Anonymous | exp.Column) else node


@lru_cache(maxsize=1024)
def _readings(name: str, args: tuple[str, ...]) -> tuple[str, ...]:
    """The distinct DuckDB forms the dialects make of ``name(args)`` (placeholders kept)."""
    call = f"{_FIXED.get(name, name)}({', '.join(args)})"
    dialects = ("duckdb",) if name in _FIXED else DIALECTS
    forms: dict[str, None] = {}
    for dialect in dialects:
        node = _read(call, dialect)
        if node is None:
            continue
        placeholders = [c.name for c in node.find_all(exp.Column)]
        wanted = [a for a in args if a.startswith(_PLACEHOLDER)]
        if sorted(placeholders) != sorted(wanted):
            continue  # an argument dropped or repeated: not a respelling
        try:
            form = node.sql(dialect="duckdb")
            sqlglot.parse_one(form, read="duckdb")
        except Exception:  # no DuckDB form of it (``glob``): not a respelling
            continue
        forms[form] = None
    return tuple(forms)


def _respelled(node: exp.Anonymous) -> exp.Expr | None:
    try:
        return _respell_one(node)
    except Exception:  # any failure leaves the call unknown, so refused: never a crash
        return None


def _respell_one(node: exp.Anonymous) -> exp.Expr | None:
    template = _template(node)
    if template is None:
        return None
    forms = _readings(*template)
    if len(forms) != 1:
        return None
    new = sqlglot.parse_one(forms[0], read="duckdb")
    for column in list(new.find_all(exp.Column)):
        index = int(column.name.removeprefix(_PLACEHOLDER))
        column.replace(node.expressions[index].copy())
    return new


def respell(root: exp.Expr) -> None:
    """Respell, in place, every unknown function under ``root`` another dialect reads one way.

    Also ``count(1)`` (any non-NULL constant), ``count()`` and ``sum(1)`` are ``count(*)``, and
    the standard ``FETCH FIRST n ROWS ONLY`` is ``LIMIT n``, and the standard
    ``percentile_cont(q) WITHIN GROUP (ORDER BY x)`` is ``quantile_cont(x, q)``; a
    conditional aggregate is its FILTER form (``conditional.py``); DuckDB's
    ``ORDER BY ALL`` is ``ORDER BY 1, 2, …`` and ``LIMIT ALL`` no limit.  Then the
    ``approx_count_distinct(x)`` is ``count(DISTINCT x)``, and ``corr``, the covariances
    and the ``regr_*`` family their sums of products (``comoments.py``).  Then the
    equivalent forms of ``sandbox/query/normalize.py`` (implicit joins, ``LIMIT n
    OFFSET m``, an outer SELECT over an aggregating derived table or CTE).
    """
    if isinstance(root, exp.Select):
        # First, so a CASE computed in a CTE is read as a FILTER as one written in place
        # (normalize calls it again, for aggregates other dialects spell differently).
        projecting_source(root)
    as_filters(root)
    for where in list(root.find_all(exp.Where)):
        # FILTER (WHERE (f)) is FILTER (WHERE f): one cell, not two noised apart
        if isinstance(where.parent, exp.Filter):
            while isinstance(where.this, exp.Paren):
                where.set("this", where.this.this)
    for within in list(root.find_all(exp.WithinGroup)):
        quantile = _within_group(within)
        if quantile is not None:
            within.replace(quantile)
    for approximate in list(root.find_all(exp.ApproxQuantile)):
        quantile = _approx_quantile(approximate)
        if quantile is not None:
            approximate.replace(quantile)
    if isinstance(root, exp.Select):
        _order_by_all(root)
        limit = root.args.get("limit")
        if isinstance(limit, exp.Limit) and isinstance(limit.expression, exp.Var):
            if limit.expression.name.upper() == "ALL":  # LIMIT ALL: no limit
                root.set("limit", None)
    for fetch in list(root.find_all(exp.Fetch)):
        count, options = fetch.args.get("count"), fetch.args.get("limit_options")
        plain = options is None or not (
            options.args.get("percent") or options.args.get("with_ties")
        )
        if isinstance(count, exp.Literal) and count.is_int and plain:
            fetch.replace(exp.Limit(expression=count.copy()))
    for count in list(root.find_all(exp.Count)):
        arg = count.this
        constant = arg is None or isinstance(arg, exp.Literal | exp.Boolean)
        if constant and not count.args.get("expressions"):
            count.set("this", exp.Star())  # DuckDB reads count() as count(*) too
    for total in list(root.find_all(exp.Sum)):
        if number_is(total.this, 1) and not total.args.get("expressions"):
            # sum(1): one per row, the row count (NULL rather than 0 over no row, where
            # count(*) says 0; a group always has a row)
            total.replace(exp.Count(this=exp.Star()))
    for node in list(root.find_all(exp.Anonymous)):
        if isinstance(node.parent, exp.Table):
            continue  # a table function: refused as one, whatever other dialects make of it
        new = _respelled(node) if node is not root else None
        if new is not None:
            node.replace(new)
    for approx in list(root.find_all(exp.ApproxDistinct)):
        # approx_count_distinct(x[, accuracy]): the count of distinct values, estimated;
        # the enclave counts them exactly, within any accuracy asked for (noised under a
        # budget as count(DISTINCT x) is)
        counted = approx.this
        if isinstance(counted, exp.Distinct) and len(counted.expressions) == 1:
            counted = counted.expressions[0]
        if isinstance(counted, exp.Column):
            approx.replace(exp.Count(this=exp.Distinct(expressions=[counted.copy()])))
    as_moments(root)
    normalize(root)


def _order_by_all(select: exp.Select) -> None:
    """DuckDB's ``ORDER BY ALL`` (every output, left to right) as ``ORDER BY 1, 2, …``."""
    order = select.args.get("order")
    if order is None or len(order.expressions) != 1:
        return
    (item,) = order.expressions
    if not (isinstance(item.this, exp.Var) and item.this.name.upper() == "ALL"):
        return
    for projection in select.expressions:
        bare = projection.unalias()
        starred = isinstance(bare, exp.Star) or (
            isinstance(bare, exp.Column) and isinstance(bare.this, exp.Star)
        )
        if starred or projection.find(exp.Columns):
            return  # outputs a star stands for: not countable here, refused as written
    positions = []
    for i in range(1, len(select.expressions) + 1):
        ordered = item.copy()
        ordered.set("this", exp.Literal.number(i))
        positions.append(ordered)
    order.set("expressions", positions)


def _within_group(within: exp.WithinGroup) -> exp.Expr | None:
    """``percentile_cont(q) WITHIN GROUP (ORDER BY x)`` as ``quantile_cont(x, q)``.

    Only one ascending key and a numeric constant q: the form with one meaning.
    """
    func, order = within.this, within.expression
    if not isinstance(func, exp.PercentileCont | exp.PercentileDisc):
        return None
    if not isinstance(order, exp.Order) or len(order.expressions) != 1:
        return None
    (key,) = order.expressions
    q = func.this
    if key.args.get("desc") or not (isinstance(q, exp.Literal) and not q.is_string):
        return None
    return type(func)(this=key.this.copy(), expression=q.copy())


def _approx_quantile(approx: exp.ApproxQuantile) -> exp.Expr | None:
    """``approx_quantile(x, q)`` as ``quantile_cont(x, q)`` (as ``approx_count_distinct``
    is counted exactly): under a budget both are the one DP quantile; without one both are
    refused alike.  Only one numeric constant q (a list of them is left as written)."""
    q = approx.args.get("quantile")
    if not (isinstance(q, exp.Literal) and not q.is_string) or approx.args.get("accuracy"):
        return None
    quantile = exp.PercentileCont(this=approx.this.copy(), expression=q.copy())
    quantile.meta[WRITTEN_AS] = "approx_quantile"  # refusals name what was written
    return quantile


def alternatives(node: exp.Anonymous) -> tuple[str, ...]:
    """The DuckDB forms other dialects give an unknown function (several: it is ambiguous)."""
    template = _template(node)
    if template is None:
        return ()
    names = iter("xyzuvw")
    shown = {a: next(names, a) for a in template[1] if a.startswith(_PLACEHOLDER)}
    out = []
    for form in _readings(*template):
        for placeholder, letter in shown.items():
            form = form.replace(placeholder, letter)
        out.append(form.lower())
    return tuple(out)


def top_to_limit(sql: str) -> str | None:
    """``SELECT TOP n …`` (T-SQL) as ``SELECT … LIMIT n``, for the released SELECT only.

    Only when ``TOP`` with a whole number follows the outermost query's ``SELECT``
    (or ``SELECT DISTINCT``), once, and the query has no LIMIT: None otherwise.
    """
    try:
        tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(sql)
    except Exception:  # does not tokenize: not ours to fix
        return None
    depth, found = 0, None
    for i, token in enumerate(tokens):
        if token.token_type is TokenType.L_PAREN:
            depth += 1
        elif token.token_type is TokenType.R_PAREN:
            depth -= 1
        elif token.text.upper() == "TOP" and i > 0:
            before = tokens[i - 1]
            after = tokens[i + 1] if i + 1 < len(tokens) else None
            at_select = before.token_type is TokenType.SELECT or (
                before.token_type is TokenType.DISTINCT
                and i > 1
                and tokens[i - 2].token_type is TokenType.SELECT
            )
            if found is not None or depth != 0 or not at_select or after is None:
                return None
            if after.token_type is not TokenType.NUMBER or not after.text.isdigit():
                return None
            found = (token, after)
    if found is None:
        return None
    top, number = found
    follows = tokens[tokens.index(number) + 1] if number is not tokens[-1] else None
    if follows is not None and follows.text.upper() in ("PERCENT", "WITH"):
        return None
    rest = sql[: top.start] + sql[number.end + 1 :]
    try:
        root = sqlglot.parse_one(rest, read="duckdb")
    except Exception:  # something else is wrong too: let the parser say so
        return None
    if not isinstance(root, exp.Select) or root.args.get("limit") is not None:
        return None
    return root.limit(int(number.text)).sql(dialect="duckdb")
