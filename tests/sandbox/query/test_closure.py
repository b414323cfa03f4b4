# Over 400 lines: one table of wrapping cases per node kind and clause; split it by kind.
"""The guard is closed by construction: every sqlglot node type is handled or refused.

Two halves.  The node-kind table is total: every subclass of sqlglot's ``Expression``
either has a kind in ``NODE_KINDS``, or every walk of the guard refuses it (a node
type added by a sqlglot upgrade is refused until someone gives it a rule).  And
every kind that carries a value (scalar functions, operators, casts, predicates) keeps
the lineage of what it wraps: an identifier, the L4 id number or a whole row wrapped
in any of them is refused in every clause.
"""

from __future__ import annotations

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from sandbox.core.errors import QueryRefused
from sandbox.query.closure import check_closed, check_writable
from sandbox.query.guard import _check_output, _Rules
from sandbox.query.nodes import CLAUSES, Kind
from sandbox.query.parse import ALLOWED_NODES, NODE_KINDS, parse_query
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access, guard


def _subclasses(root: type) -> set[type]:
    found: set[type] = set()
    stack = [root]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                stack.append(sub)
    return found


ALL_TYPES = sorted(_subclasses(exp.Expression), key=lambda c: (c.__module__, c.__name__))


def _instance(cls: type) -> exp.Expression | None:
    """A bare node of ``cls``; None for the abstract traits sqlglot never instantiates."""
    try:
        return cls()
    except ValueError:
        return None


UNHANDLED = [c for c in ALL_TYPES if c not in NODE_KINDS]


def test_there_are_many_types_and_the_table_holds_few() -> None:
    """A sanity check on the enumeration itself: it sees sqlglot's whole expression set."""
    assert len(ALL_TYPES) > 900
    assert exp.TableColumn in UNHANDLED and exp.Struct in UNHANDLED and exp.Lambda in UNHANDLED
    assert set(NODE_KINDS) <= set(ALL_TYPES) | {exp.Expression}


def test_every_kind_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "guard.md").read_text()
    for kind in Kind:
        assert f"\n| {kind.value} |" in doc, kind


def test_the_syntax_allowlist_is_the_table() -> None:
    assert frozenset(NODE_KINDS) == ALLOWED_NODES
    assert {t for t, k in NODE_KINDS.items() if k is Kind.CLAUSE} == CLAUSES


def _scope_and_rules() -> tuple[_Rules, object, exp.Select]:
    sql = "SELECT district, count(*) AS n FROM health.claims GROUP BY district"
    parsed = parse_query(sql, max_length=MAX_SQL_LENGTH)
    root = parsed.expression
    scope = list(traverse_scope(root))[-1]
    return _Rules(parsed, access()), scope, root


@pytest.mark.parametrize("cls", UNHANDLED, ids=lambda c: c.__name__)
def test_every_type_without_a_kind_is_refused_by_every_walk(cls: type) -> None:
    node = _instance(cls)
    if node is None:
        # An abstract trait (Func, Condition ...): no parse ever produces one.
        assert cls.__dict__.get("is_trait") or "traits" in _trait_error(cls)
        return
    rules, scope, _ = _scope_and_rules()
    wrapped = exp.Paren(this=node)  # reached through a node that is handled
    for check in (
        lambda: check_closed(exp.Where(this=wrapped), ""),
        lambda: rules.walk(wrapped, scope, "predicate", "WHERE"),
        lambda: rules.walk(wrapped, scope, "key", "GROUP BY"),
        lambda: rules.walk(wrapped, scope, "inner_expression", "a derived table"),
        # (a bare node: a parsed one always renders, a bare one may not inside a wrapper)
        lambda: _check_output(rules, scope, node, set(), "SELECT"),
        lambda: _check_output(rules, scope, node, set(), "ORDER BY", frozenset({"n"})),
    ):
        with pytest.raises(QueryRefused) as info:
            check()
        assert info.value.rule in ("guard.unsupported", "guard.row_value"), info.value.rule


def _trait_error(cls: type) -> str:
    try:
        cls()
    except ValueError as exc:
        return str(exc)
    return ""


# -- every value-carrying kind keeps the lineage of what it wraps ---------------------------

#: One use of each scalar and predicate node type in the table, around ``{c}``.
WRAPPERS = {
    exp.Add: "{c} + 1",
    exp.Sub: "{c} - 1",
    exp.Mul: "{c} * 2",
    exp.Div: "{c} / 2",
    exp.IntDiv: "{c} // 2",
    exp.Mod: "{c} % 7",
    exp.Neg: "-({c})",
    exp.Abs: "abs({c})",
    exp.Round: "round({c}, 1)",
    exp.Floor: "floor({c})",
    exp.Ceil: "ceil({c})",
    exp.Sign: "sign({c})",
    exp.Sqrt: "sqrt({c})",
    exp.Pow: "power({c}, 2)",
    exp.Ln: "ln({c})",
    exp.Log: "log({c})",
    exp.Exp: "exp({c})",
    exp.Cbrt: "cbrt({c})",
    exp.Trunc: "trunc({c})",
    exp.Greatest: "greatest({c}, 0)",
    exp.Least: "least({c}, 0)",
    exp.Coalesce: "coalesce({c}, 'x')",
    exp.Nullif: "nullif({c}, 'x')",
    exp.If: "if({c} = 'x', 1, 0)",
    exp.Case: "CASE WHEN {c} = 'x' THEN 1 ELSE 0 END",
    exp.Upper: "upper({c})",
    exp.Lower: "lower({c})",
    exp.Length: "length({c})",
    exp.Substring: "substring({c}, 1, 4)",
    exp.Left: "left({c}, 4)",
    exp.Right: "right({c}, 4)",
    exp.Concat: "concat({c}, 'x')",
    exp.DPipe: "{c} || 'x'",
    exp.Trim: "trim({c})",
    exp.TimestampTrunc: "date_trunc('year', {c})",
    exp.Extract: "extract(year FROM {c})",
    exp.Year: "year({c})",
    exp.Month: "month({c})",
    exp.Day: "day({c})",
    exp.Hour: "hour({c})",
    exp.Quarter: "quarter({c})",
    exp.DayOfWeek: "dayofweek({c})",
    exp.DayOfYear: "dayofyear({c})",
    exp.TimeToStr: "strftime({c}, '%Y')",
    exp.DayOfWeekIso: "isodow({c})",
    exp.Week: "week({c})",
    exp.Dayname: "dayname({c})",
    exp.Monthname: "monthname({c})",
    exp.DateDiff: "date_diff('day', {c}, DATE '2024-01-01')",
    exp.Cast: "CAST({c} AS VARCHAR)",
    exp.TryCast: "TRY_CAST({c} AS VARCHAR)",
    exp.Paren: "({c})",
    exp.Tuple: "({c}, 1)",
    exp.EQ: "({c} = 'x')",
    exp.NEQ: "({c} <> 'x')",
    exp.GT: "({c} > 'x')",
    exp.GTE: "({c} >= 'x')",
    exp.LT: "({c} < 'x')",
    exp.LTE: "({c} <= 'x')",
    exp.Between: "({c} BETWEEN 'a' AND 'z')",
    exp.In: "({c} IN ('a', 'b'))",
    exp.Is: "({c} IS NULL)",
    exp.Like: "({c} LIKE 'a%')",
    exp.ILike: "({c} ILIKE 'a%')",
    exp.NullSafeEQ: "({c} IS NOT DISTINCT FROM 'x')",
    exp.NullSafeNEQ: "({c} IS DISTINCT FROM 'x')",
    exp.StartsWith: "starts_with({c}, 'x')",
    exp.Not: "(NOT {c} = 'x')",
    exp.And: "({c} = 'x' AND TRUE)",
    exp.Or: "({c} = 'x' OR FALSE)",
}
#: Handled kinds that carry no value of their own, or that the aggregate rules own.
NOT_WRAPPERS = {Kind.COLUMN, Kind.AGGREGATE, Kind.CONSTANT, Kind.LEAF, Kind.STAR, Kind.CLAUSE}


def test_every_value_carrying_kind_has_a_wrapping_case() -> None:
    carrying = {t for t, k in NODE_KINDS.items() if k not in NOT_WRAPPERS}
    missing = (
        carrying
        - set(WRAPPERS)
        - {exp.Alias, exp.Ordered, exp.Distinct, exp.DateTrunc, exp.Interval}
    )
    assert not missing, sorted(c.__name__ for c in missing)


#: Where a wrapped value can be used, for a source aliased ``c`` (health.claims).
CLAUSE_SQL = {
    "WHERE": "SELECT count(*) FROM health.claims c WHERE {e} IS NOT NULL",
    "FILTER": "SELECT count(*) FILTER (WHERE {e} IS NOT NULL) AS n FROM health.claims c",
    "GROUP BY": "SELECT count(*) AS n FROM health.claims c GROUP BY {e}",
    "HAVING": "SELECT district, count(*) FROM health.claims c GROUP BY district "
    "HAVING count(*) > 10 AND {e} IS NOT NULL",
    "ORDER BY": "SELECT district, count(*) FROM health.claims c GROUP BY district ORDER BY {e}",
    "CASE": "SELECT count(*) FILTER (WHERE CASE WHEN {e} IS NULL THEN 0 ELSE 1 END = 1) AS n "
    "FROM health.claims c",
    "CASE output": "SELECT CASE WHEN {e} IS NULL THEN 0 ELSE 1 END AS x, count(*) "
    "FROM health.claims c GROUP BY 1",
    "derived": "SELECT count(*) FROM (SELECT {e} AS v, district FROM health.claims c) d "
    "WHERE d.district = 'D01'",
}
#: The same uses in a join (the enterprise register: its name is an identifier).
JOIN_SQL = (
    "SELECT count(*) FROM market.enterprises c JOIN hrss.social_insurance s "
    "ON s.credit_code = c.credit_code AND {e} IS NOT NULL"
)
#: What may stand for {c}: identifiers, the L4 id number, the whole row.
HIDDEN = {
    "c.person_id": "guard.identifier",
    "c.name": "guard.identifier",
    "c.id_number": "guard.l4_column",
    "c": "guard.row_value",
}
REFUSED = {"guard.identifier", "guard.l4_column", "guard.row_value"}
ACCEPTABLE = REFUSED | {"guard.join", "guard.not_aggregated", "guard.group_key"}

#: The wrapping cases of the kinds in the table (a wrapper for a type not in it is refused
#: by the syntax stage already).
HANDLED = {kind: template for kind, template in WRAPPERS.items() if kind in NODE_KINDS}

CASES = [
    (kind.__name__, clause, column, template, sql)
    for kind, template in HANDLED.items()
    for clause, sql in CLAUSE_SQL.items()
    for column in HIDDEN
]


def _refused(sql: str) -> QueryRefused:
    try:
        guard(sql)
    except QueryRefused as refusal:
        return refusal
    except sqlglot.errors.SqlglotError as error:  # pragma: no cover - reported below
        raise AssertionError(f"not a refusal: {error}") from None
    raise AssertionError(f"accepted: {sql}")


@pytest.mark.parametrize(
    ("kind", "clause", "column", "template", "sql"),
    CASES,
    ids=[f"{k}-{cl}-{c}" for k, cl, c, _, _ in CASES],
)
def test_a_hidden_column_wrapped_in_any_kind_is_refused_in_every_clause(
    kind: str, clause: str, column: str, template: str, sql: str
) -> None:
    query = sql.format(e=template.format(c=column))
    refusal = _refused(query)
    assert refusal.rule in ACCEPTABLE, (query, refusal.rule, refusal.message)
    if refusal.rule in REFUSED:
        assert refusal.rule == HIDDEN[column], (query, refusal.message)
    assert "110101" not in refusal.message


@pytest.mark.parametrize("column", ["c.credit_code", "c.name", "c"])
@pytest.mark.parametrize("kind", sorted(HANDLED, key=lambda c: c.__name__), ids=str)
def test_a_hidden_column_wrapped_in_any_kind_is_refused_in_join_on(kind: type, column: str) -> None:
    query = JOIN_SQL.format(e=HANDLED[kind].format(c=column))
    refusal = _refused(query)
    assert refusal.rule in ("guard.join", "guard.identifier", "guard.row_value"), refusal.message


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(sorted(HANDLED.values())), min_size=1, max_size=3),
    st.sampled_from(sorted(HIDDEN)),
    st.sampled_from(sorted(CLAUSE_SQL)),
)
def test_nested_wrappers_keep_the_lineage(wrappers: list[str], column: str, clause: str) -> None:
    """Any nesting of handled kinds around a hidden column is still that column."""
    expression = column
    for template in wrappers:
        expression = template.format(c=f"({expression})")
    refusal = _refused(CLAUSE_SQL[clause].format(e=expression))
    assert refusal.rule in ACCEPTABLE, refusal.message
    if refusal.rule in REFUSED:
        assert refusal.rule == HIDDEN[column], refusal.message


# -- the row-value forms, and what stays accepted -------------------------------------------

ROW_VALUES = [
    "SELECT count(*) FROM health.claims c WHERE CAST(c AS VARCHAR) LIKE '%110%'",
    "SELECT count(*) FROM health.claims WHERE claims::VARCHAR LIKE '%110%'",
    "SELECT count(*) FROM health.claims c GROUP BY c",
    "SELECT count(*) FROM (SELECT district FROM health.claims) d WHERE d::VARCHAR = 'D01'",
    "WITH d AS (SELECT district FROM health.claims) SELECT count(*) FROM d WHERE length(d) > 1",
    "SELECT count(*) FILTER (WHERE c IS NOT NULL) AS n FROM health.claims c",
]


@pytest.mark.parametrize("sql", ROW_VALUES)
def test_a_source_alias_used_as_a_value_is_refused(sql: str) -> None:
    refusal = _refused(sql)
    assert refusal.rule == "guard.row_value"
    assert "stands for the whole row of" in refusal.message


def test_the_row_value_message_names_the_dataset() -> None:
    refusal = _refused(ROW_VALUES[0])
    assert refusal.message == (
        "c stands for the whole row of health.claims: name the columns you need"
    )


def test_a_qualified_star_outside_a_select_list_is_refused() -> None:
    refusal = _refused("SELECT count(c.*) FROM health.claims c")
    assert refusal.rule == "guard.star"
    assert "c.* stands for every column of health.claims" in refusal.message


# -- random trees from sqlglot's whole expression set -----------------------------------------

#: Column references an accepted query may never contain (no count(DISTINCT ...) is built).
SECRET_LEAVES = ("c.id_number", "c.name", "c.person_id", "c")
PLAIN_LEAVES = ("c.district", "c.claim_amount", "c.claim_date", "'D01'", "1", "2.5", "NULL")


def _buildable(cls: type) -> bool:
    if not issubclass(cls, exp.Func | exp.Binary | exp.Unary | exp.Condition):
        return False
    return _instance(cls) is not None and not issubclass(cls, exp.AggFunc)


NODE_TYPES = [c for c in ALL_TYPES if _buildable(c)]


def _node(cls: type, children: list[exp.Expression]) -> exp.Expression:
    """``cls`` over ``children``: its required arguments filled, the rest left out."""
    args: dict[str, object] = {}
    pool = iter(children)
    for name, required in cls.arg_types.items():
        if name == "expressions":
            args[name] = [next(pool, exp.Literal.number(1))]
        elif name in ("this", "expression") or required:
            args[name] = next(pool, exp.Literal.number(1))
    return cls(**args)


@st.composite
def _trees(draw: st.DrawFn, depth: int = 3) -> exp.Expression:
    if depth == 0 or draw(st.booleans()):
        leaf = draw(st.sampled_from(SECRET_LEAVES + PLAIN_LEAVES))
        return sqlglot.parse_one(leaf, read="duckdb")
    cls = draw(st.sampled_from(NODE_TYPES))
    children = [draw(_trees(depth - 1)) for _ in range(draw(st.integers(1, 3)))]
    return _node(cls, children)


def _render(tree: exp.Expression) -> str | None:
    try:
        return tree.sql(dialect="duckdb")
    except Exception:  # a tree sqlglot cannot write as SQL: not a query anyone can send
        return None


@settings(max_examples=400, deadline=None)
@given(_trees(), st.sampled_from(sorted(CLAUSE_SQL)))
def test_random_trees_never_release_a_hidden_column(tree: exp.Expression, clause: str) -> None:
    """Whatever sqlglot node types surround them, accepted queries hold no hidden column."""
    text = _render(tree)
    if text is None:
        return
    sql = CLAUSE_SQL[clause].format(e=f"({text})")
    try:
        guard(sql)
    except QueryRefused:
        return
    except Exception as error:  # the guard may only refuse
        raise AssertionError(f"{type(error).__name__} for {sql}") from None
    parsed = sqlglot.parse_one(sql, read="duckdb")
    seen = {col.sql() for col in parsed.find_all(exp.Column)}
    assert not seen & set(SECRET_LEAVES), f"accepted with a hidden column: {sql}"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT gender, max(district, 50) AS m FROM health.claims GROUP BY 1",
        "SELECT gender, min(claim_date, 3) AS m FROM health.claims GROUP BY 1",
        "SELECT gender, count(district, id_number) AS n FROM health.claims GROUP BY 1",
        "SELECT gender, count(district, name) AS n FROM health.claims GROUP BY 1",
    ],
)
def test_an_aggregate_argument_no_rule_reads_is_refused(sql: str) -> None:
    """The aggregate rules read one argument: a second one must not pass unread."""
    refusal = _refused(sql)
    assert refusal.rule == "guard.aggregate_argument"
    assert "takes one column" in refusal.message


def test_what_sqlglot_cannot_write_for_duckdb_is_refused() -> None:
    """A node argument the DuckDB writer would drop (here Oracle's ``(+)``) is refused."""
    column = exp.Column(this=exp.to_identifier("district"), join_mark=True)
    root = exp.select(column).from_("t")
    check_closed(root, "")  # every node has a kind ...
    with pytest.raises(QueryRefused) as info:
        check_writable(root)  # ... but one argument would be lost
    assert info.value.rule == "guard.unsupported"


def test_a_join_method_no_rule_reads_is_refused() -> None:
    refusal = _refused(
        "SELECT count(*) FROM market.enterprises e ASOF JOIN hrss.social_insurance s "
        "ON s.credit_code = e.credit_code"
    )
    assert refusal.rule == "guard.join"
    assert "ASOF joins are not allowed" in refusal.message


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SELECT () AS g, count(*) AS n FROM health.claims GROUP BY 1", "guard.row_value"),
        (
            "SELECT (district, gender) AS g, count(*) AS n FROM health.claims GROUP BY 1",
            "guard.row_value",
        ),
        ("SELECT district, (count(*), 1) AS g FROM health.claims GROUP BY 1", "guard.row_value"),
        ("SELECT count(*) FROM (SELECT (district, gender) AS t FROM health.claims) x", None),
        (
            "SELECT CAST(district AS VARCHAR[]) AS g, count(*) AS n FROM health.claims GROUP BY 1",
            "guard.unsupported",
        ),
        ("SELECT count(*) FROM health.claims WHERE district::STRUCT(a VARCHAR) IS NULL", None),
    ],
)
def test_row_and_nested_values_are_refused(sql: str, rule: str | None) -> None:
    """A tuple as a value is a STRUCT, a cast to a nested type a list or struct constructor."""
    refusal = _refused(sql)
    assert refusal.rule == (rule or refusal.rule)
    assert refusal.rule in ("guard.row_value", "guard.unsupported", "guard.syntax_element")


def test_a_row_comparison_in_a_predicate_is_accepted() -> None:
    guard("SELECT count(*) FROM health.claims WHERE (district, gender) = ('D01', 'F')")
    guard("SELECT count(*) FROM health.claims WHERE (district, gender) IN (('D01', 'F'))")
