"""A query's comments cannot set the marks the analysis keeps in sqlglot node meta.

sqlglot reads ``/* sqlglot.meta key, key2=v */`` into the meta of the node before it.
The analysis marks nodes through meta (totals, rollup stages, entity joins, expanded
columns), so ``parse_query`` drops every comment and every node's meta, the parser's
own positions included (no message names a position).
"""

from __future__ import annotations

import pytest

from sandbox.query.columns_expr import EXPANDED
from sandbox.query.join_rules import ENTITY_JOIN
from sandbox.query.parse import parse_query
from sandbox.query.rollup import STAGE
from sandbox.query.totals import TOTAL

MARKS = [TOTAL, STAGE, ENTITY_JOIN, EXPANDED, "anything_else"]


@pytest.mark.parametrize("mark", MARKS)
def test_a_comment_sets_no_mark(mark: str) -> None:
    sql = (
        f"SELECT gender /* sqlglot.meta {mark} */, count(*) /* sqlglot.meta {mark}=1 */ "
        f"FROM health.claims c /* sqlglot.meta {mark} */ "
        f"JOIN health.claims d /* sqlglot.meta {mark} */ ON c.person_id = d.person_id "
        "GROUP BY gender"
    )
    parsed = parse_query(sql, max_length=10_000)
    for node in parsed.expression.walk():
        assert not node.comments
        assert node._meta is None, (type(node).__name__, node._meta)
    # Nothing generated from the tree carries a comment that a later parse would read.
    assert "sqlglot.meta" not in parsed.expression.sql(dialect="duckdb")
