"""Data product templates (数据产品): SQL with typed parameters, bound as literals (pure).

A template is one SQL text with ``:name`` placeholders.  Each placeholder is a declared
parameter of one type:

- ``int`` / ``float``: a number within the declared ``min`` and ``max`` (both required);
- ``date``: ``YYYY-MM-DD`` within ``min`` and ``max``, bound as ``CAST('…' AS DATE)``;
- ``enum``: one of the listed ``values`` (strings or numbers);
- ``string``: one of a listed domain: ``values``, or ``domain = "dataset.column"``, the
  column's declared ``values`` in its classification (resolved at publication).

No text is ever spliced into SQL: the template is parsed once, and binding replaces
each placeholder node with a literal node (sqlglot), so no value can change the
query's shape (a property test checks it).  :func:`match_binding` is the converse: it
answers which values, if any, make the template into a given SQL text, which is how
the query service recognises a product's query (``product.template``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from sandbox.core.errors import InvalidInput, QueryRefused

__all__ = [
    "PARAM_TYPES",
    "ParamSpec",
    "Template",
    "bind",
    "from_text",
    "literal_for",
    "match_binding",
    "parse_params",
    "parse_template",
    "samples",
]

PARAM_TYPES = ("int", "float", "date", "enum", "string")
PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_PARAMS = 20
MAX_VALUES = 100
MAX_TEMPLATE = 20_000
Value = int | float | str | date


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    low: Value | None = None
    high: Value | None = None
    values: tuple[Any, ...] = ()
    domain: str | None = None
    """``dataset.column`` whose declared ``values`` a ``string`` takes (resolved into values)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.low is not None:
            out["min"] = self.low.isoformat() if isinstance(self.low, date) else self.low
            out["max"] = self.high.isoformat() if isinstance(self.high, date) else self.high
        if self.values:
            out["values"] = list(self.values)
        if self.domain:
            out["domain"] = self.domain
        return out

    def check(self, value: Any) -> Value:
        """``value`` as this parameter's type, or :class:`InvalidInput` (never quoting it)."""
        where = f"parameter {self.name}"
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{where}: an integer", rule="product.param_type")
            return self._within(value)
        if self.type == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"{where}: a number", rule="product.param_type")
            if not math.isfinite(value):
                raise InvalidInput(f"{where}: a finite number", rule="product.param_type")
            return self._within(float(value))
        if self.type == "date":
            day: date | None
            if isinstance(value, date):
                day = value
            else:
                try:
                    day = date.fromisoformat(value) if isinstance(value, str) else None
                except ValueError:
                    day = None
                if day is None or not isinstance(value, str) or len(value) != 10:
                    raise InvalidInput(f"{where}: a date YYYY-MM-DD", rule="product.param_type")
            return self._within(day)
        # enum and string: one of the listed values, with its type (1 is not "1").
        for allowed in self.values:
            if type(allowed) is type(value) and allowed == value:
                return allowed  # type: ignore[no-any-return]
        raise InvalidInput(
            f"{where}: one of the {len(self.values)} listed values", rule="product.param_value"
        )

    def _within(self, value: Any) -> Value:
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            raise InvalidInput(
                f"parameter {self.name}: between {self.to_dict()['min']} and "
                f"{self.to_dict()['max']}",
                rule="product.param_range",
            )
        return value  # type: ignore[no-any-return]


def from_text(spec: ParamSpec, text: str) -> Any:
    """A value typed on a command line (``name=text``) as the parameter's type: a number for
    ``int`` and ``float``, the listed value whose text it is for ``enum``; checked later."""
    try:
        if spec.type == "int":
            return int(text)
        if spec.type == "float":
            return float(text)
    except ValueError:
        raise InvalidInput(
            f"parameter {spec.name}: {'an integer' if spec.type == 'int' else 'a number'}",
            rule="product.param_type",
        ) from None
    if spec.type == "enum":
        return next((v for v in spec.values if str(v) == text), text)
    return text


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, rule="product.params")


def _bound(kind: str, raw: Any, name: str, key: str) -> Value:
    if kind == "date":
        try:
            return date.fromisoformat(raw) if isinstance(raw, str) else _fail()
        except ValueError:
            raise _bad(f"parameter {name}: {key} is a date YYYY-MM-DD") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _bad(f"parameter {name}: {key} is a finite number")
    if kind == "int" and not isinstance(raw, int):
        raise _bad(f"parameter {name}: {key} is an integer")
    return raw


def _fail() -> date:
    raise ValueError


def parse_params(
    raw: Mapping[str, Any],
    domains: Mapping[str, tuple[str, ...] | None] | None = None,
    *,
    stored: bool = False,
) -> tuple[ParamSpec, ...]:
    """Declared parameters; ``domains``: ``dataset.column`` -> its declared values (or None).

    ``stored``: as a product keeps them (:meth:`ParamSpec.to_dict`), a ``string``'s domain
    already resolved into its values, which are used as they are.
    """
    if not isinstance(raw, Mapping) or len(raw) > MAX_PARAMS:
        raise _bad(f"parameters: a table of at most {MAX_PARAMS} named parameters")
    out = []
    for name, decl in raw.items():
        if not PARAM_NAME.fullmatch(str(name)):
            raise _bad("parameter names are lower-case identifiers of at most 40 characters")
        if not isinstance(decl, Mapping) or decl.get("type") not in PARAM_TYPES:
            raise _bad(f"parameter {name}: type is one of {list(PARAM_TYPES)}")
        kind = decl["type"]
        allowed = {"type", "min", "max"} if kind in ("int", "float", "date") else set()
        allowed |= {"type", "values", "domain"} if kind in ("enum", "string") else set()
        if set(decl) - allowed:
            raise _bad(f"parameter {name}: unknown keys {sorted(set(decl) - allowed)}")
        if kind in ("int", "float", "date"):
            if "min" not in decl or "max" not in decl:
                raise _bad(f"parameter {name}: a {kind} declares min and max")
            low, high = (
                _bound(kind, decl["min"], name, "min"),
                _bound(kind, decl["max"], name, "max"),
            )
            if not low <= high:  # type: ignore[operator]
                raise _bad(f"parameter {name}: min <= max")
            out.append(ParamSpec(name, kind, low, high))
            continue
        values, domain = decl.get("values"), decl.get("domain")
        if kind == "string" and domain is not None and not (stored and values is not None):
            if values is not None:
                raise _bad(f"parameter {name}: values or domain, not both")
            found = (domains or {}).get(str(domain))
            if not found:
                raise InvalidInput(
                    f"parameter {name}: the domain must be a column of the product's dataset "
                    "that declares values in its classification",
                    rule="product.param_domain",
                )
            values = list(found)
        if not isinstance(values, list | tuple) or not 1 <= len(values) <= MAX_VALUES:
            raise _bad(f"parameter {name}: values is a list of 1 to {MAX_VALUES}")
        scalar = (str,) if kind == "string" else (str, int, float)
        if any(isinstance(v, bool) or not isinstance(v, scalar) for v in values):
            kinds = "strings" if kind == "string" else "strings or numbers"
            raise _bad(f"parameter {name}: values are {kinds}")
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise _bad(f"parameter {name}: values are finite")
        out.append(ParamSpec(name, kind, values=tuple(values), domain=domain))
    return tuple(out)


@dataclass(frozen=True)
class Template:
    sql: str
    expression: exp.Expression
    params: tuple[ParamSpec, ...]

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


def parse_template(sql: str, params: tuple[ParamSpec, ...]) -> Template:
    """Parse once; every placeholder is declared and every declared parameter is used."""
    if not isinstance(sql, str) or not sql.strip() or len(sql) > MAX_TEMPLATE:
        raise InvalidInput(
            f"template: one SELECT of at most {MAX_TEMPLATE} characters", rule="product.template"
        )
    try:
        parsed = sqlglot.parse(sql, read="duckdb")
    except SqlglotError:
        raise InvalidInput("template: not valid SQL", rule="product.template") from None
    if len(parsed) != 1 or parsed[0] is None:
        raise InvalidInput("template: exactly one statement", rule="product.template")
    expression = parsed[0]
    used = {p.name for p in expression.find_all(exp.Placeholder)}
    unnamed = [p for p in expression.find_all(exp.Placeholder) if not p.name]
    declared = {p.name for p in params}
    if unnamed or used - declared:
        raise InvalidInput(
            "template: every placeholder is a declared :name", rule="product.template"
        )
    if declared - used:
        raise InvalidInput(
            f"template: declared parameters not used: {sorted(declared - used)}",
            rule="product.template",
        )
    assert isinstance(expression, exp.Expression)
    return Template(sql, expression, params)


def literal_for(spec: ParamSpec, value: Value) -> exp.Expression:
    """The literal node a checked value binds to (the form its SQL text parses back to)."""
    if isinstance(value, date):
        return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("DATE"))
    if isinstance(value, str):
        return exp.Literal.string(value)
    number = exp.Literal.number(repr(abs(value)) if isinstance(value, float) else abs(value))
    return exp.Neg(this=number) if value < 0 else number


def bind(template: Template, values: Mapping[str, Any]) -> str:
    """The template with each placeholder replaced by its checked value's literal."""
    missing = sorted({p.name for p in template.params} - set(values))
    extra = sorted(set(values) - {p.name for p in template.params})
    if missing or extra:
        raise InvalidInput(
            f"parameters: missing {missing}, unknown {extra}", rule="product.param_names"
        )
    checked = {p.name: p.check(values[p.name]) for p in template.params}
    return _substitute(template, checked)


def _substitute(template: Template, checked: Mapping[str, Value]) -> str:
    specs = {p.name: p for p in template.params}

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder):
            return literal_for(specs[node.name], checked[node.name])
        return node

    return template.expression.copy().transform(replace).sql(dialect="duckdb")


class _Mismatch(Exception):
    pass


def _empty(value: Any) -> bool:
    return value is None or value is False or value == []


def _match(t: Any, s: Any, found: dict[str, list[exp.Expression]]) -> None:
    if isinstance(t, exp.Placeholder):
        if not isinstance(s, exp.Expression):
            raise _Mismatch
        found.setdefault(t.name, []).append(s)
        return
    if isinstance(t, exp.Expression) or isinstance(s, exp.Expression):
        if type(t) is not type(s):
            raise _Mismatch
        for key in set(t.args) | set(s.args):
            a, b = t.args.get(key), s.args.get(key)
            if _empty(a) and _empty(b):
                continue
            if isinstance(a, list) or isinstance(b, list):
                if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
                    raise _Mismatch
                for x, y in zip(a, b, strict=True):
                    _match(x, y, found)
            else:
                _match(a, b, found)
        return
    if t != s:
        raise _Mismatch


def _value_of(spec: ParamSpec, node: exp.Expression) -> Any:
    sign = 1
    if isinstance(node, exp.Neg):
        sign, node = -1, node.this
        if spec.type not in ("int", "float", "enum"):
            raise _Mismatch
    if isinstance(node, exp.Cast) and spec.type == "date":
        inner = node.this
        if node.to.this is not exp.DataType.Type.DATE or not isinstance(inner, exp.Literal):
            raise _Mismatch
        return inner.this if inner.is_string else _raise()
    if not isinstance(node, exp.Literal) or spec.type == "date":
        raise _Mismatch
    if node.is_string:
        if sign < 0:
            raise _Mismatch
        return node.this
    text = node.this
    number: int | float = float(text) if re.search(r"[.eE]", text) else int(text)
    if spec.type == "float":
        number = float(number)
    return sign * number


def _raise() -> Any:
    raise _Mismatch


def match_binding(template: Template, sql: str) -> dict[str, Value]:
    """The checked values that make ``template`` into ``sql``, or :class:`QueryRefused`."""
    refused = QueryRefused(
        "a product's query is its published template with valid parameter values only",
        rule="product.template",
    )
    try:
        parsed = sqlglot.parse(sql, read="duckdb")
        if len(parsed) != 1 or parsed[0] is None:
            raise refused
        found: dict[str, list[exp.Expression]] = {}
        _match(template.expression, parsed[0], found)
        values: dict[str, Any] = {}
        for name, nodes in found.items():
            spec = template.param(name)
            got = {repr(_value_of(spec, n)) for n in nodes}
            first = _value_of(spec, nodes[0])
            if len(got) != 1:
                raise _Mismatch
            values[name] = first
        checked = {p.name: p.check(values[p.name]) for p in template.params}
        if _substitute(template, checked) != parsed[0].sql(dialect="duckdb"):
            raise _Mismatch
    except (_Mismatch, SqlglotError, InvalidInput, KeyError, ValueError):
        raise refused from None
    return checked


def samples(spec: ParamSpec) -> list[Value]:
    """Values the guard checks a template with at publication: both ends and the middle of
    a range, every listed value."""
    if spec.type in ("enum", "string"):
        return list(spec.values)
    assert spec.low is not None and spec.high is not None
    if spec.type == "date":
        assert isinstance(spec.low, date) and isinstance(spec.high, date)
        middle: Value = date.fromordinal((spec.low.toordinal() + spec.high.toordinal()) // 2)
    elif spec.type == "int":
        middle = (int(spec.low) + int(spec.high)) // 2  # type: ignore[arg-type]
    else:
        middle = (float(spec.low) + float(spec.high)) / 2  # type: ignore[arg-type]
    return list(dict.fromkeys([spec.low, middle, spec.high]))
