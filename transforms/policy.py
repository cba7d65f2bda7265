"""Removal and review policies: small boolean expressions over an audit record, and the
keep / review / remove decision they drive.

A policy is written in config (``policy.remove_if``, ``policy.review_if``) as a short
expression, for example::

    child and nudity
    (medical_scan or medical_clinical) and name_with_medical_term
    scores.nudity > 0.9 and status == "ok"
    match.pdq or takedown

Grammar (``not`` binds tighter than ``and``, which binds tighter than ``or``)::

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | primary
    primary    := "(" or_expr ")" | comparison | condition
    comparison := field OP literal | literal OP field      OP: > >= < <= == !=
    field      := "scores." CATEGORY (number literal) | "status" (quoted string, == or !=)
    condition  := NAME            true when NAME is in record["labels"] or record["caption_flags"]
                | "match" | "takedown"           true when record["matches"] is not empty
                | "match." KIND                  true when a match has that kind (pdq, md5, ...)

Expressions are parsed by the tokenizer and recursive-descent parser below (never by
``eval``) into closures; unknown names and syntax errors are reported with a caret under
the offending column. Data a record lacks (no scores on a failed fetch, no status) makes
the comparisons that need it false, so such rows fall through to "keep" unless a takedown
match or another condition says otherwise.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms.records import ACTIONS, AUDIT_SCHEMA, STATUSES

Record = Mapping[str, Any]
_Test = Callable[[Record], bool]

KEYWORDS = frozenset({"and", "or", "not"})
# Names the grammar owns; a category cannot be spelt like one of these.
RESERVED_NAMES = frozenset({"match", "takedown", "scores", "status"}) | KEYWORDS

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
# "0.9 < scores.x" is "scores.x > 0.9".
_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}

_MAX_KNOWN_SHOWN = 20


class PolicyError(ValueError):
    """A policy expression that does not compile; says where, with a caret."""

    def __init__(self, expr: str, message: str, column: int, where: str = "policy"):
        self.expr = expr
        self.message = message
        self.column = column  # 0-based offset into expr
        self.where = where
        super().__init__(self._render())

    def _render(self) -> str:
        # Tabs and newlines would push the caret out of line with the expression.
        shown = re.sub(r"\s", " ", self.expr)
        return f"{self.where}: {self.message}\n  {shown}\n  {' ' * self.column}^"

    def __reduce__(self):
        return (PolicyError, (self.expr, self.message, self.column, self.where))

    def one_line(self) -> str:
        """``expr: message at column N`` (1-based), for a config error on one line."""
        shown = " ".join(self.expr.split())
        return f"{shown}: {self.message} at column {self.column + 1}"


# --------------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class _Token:
    kind: str  # name | number | string | op | keyword | end
    text: str
    pos: int
    value: Any = None


_TOKEN_PATTERN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[+-]?(?:\d|\.\d)(?:[\w.]|(?<=[eE])[+-])*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<quote>["'])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]*)*)
  | (?P<op>==|!=|>=|<=|>|<|\(|\))
  | (?P<bad>=|!|.)
    """,
    re.VERBOSE,
)
_STRING_ESCAPE = re.compile(r"\\(.)")


def _tokenize(expr: str, fail: Callable[[str, int], PolicyError]) -> list[_Token]:
    tokens = []
    for match in _TOKEN_PATTERN.finditer(expr):
        kind, text, pos = match.lastgroup, match.group(), match.start()
        if kind == "space":
            continue
        if kind == "quote":
            raise fail("string is never closed", pos)
        if kind == "bad":
            hint = {"=": " (use '==' to compare)", "!": " (use 'not', or '!=' to compare)",
                    "&": " (use 'and')", "|": " (use 'or')"}.get(text, "")
            raise fail(f"unexpected character {text!r}{hint}", pos)
        if kind == "name" and text in KEYWORDS:
            kind = "keyword"
        value = _STRING_ESCAPE.sub(r"\1", text[1:-1]) if kind == "string" else None
        tokens.append(_Token(kind, text, pos, value))
    tokens.append(_Token("end", "", len(expr)))
    return tokens


def _describe(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


# --------------------------------------------------------------------------- record access

def _has_name(name: str) -> _Test:
    def test(record: Record) -> bool:
        return name in (record.get("labels") or ()) or name in (record.get("caption_flags") or ())

    return test


def _any_match(record: Record) -> bool:
    return bool(record.get("matches"))


def _match_kind(kind: str) -> _Test:
    def test(record: Record) -> bool:
        return any(
            isinstance(m, Mapping) and m.get("kind") == kind for m in record.get("matches") or ()
        )

    return test


def _score(record: Record, category: str) -> float | None:
    scores = record.get("scores")
    if isinstance(scores, Mapping):
        value = scores.get(category)
    elif isinstance(scores, (list, tuple)):  # the written form: [(category, score), ...]
        value = next((v for k, v in scores if k == category), None)
    else:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _score_test(category: str, op: str, limit: float) -> _Test:
    compare = _COMPARISONS[op]

    def test(record: Record) -> bool:
        value = _score(record, category)
        return value is not None and compare(value, limit)

    return test


def _status_test(op: str, status: str) -> _Test:
    want_equal = op == "=="

    def test(record: Record) -> bool:
        actual = record.get("status")
        return actual is not None and (actual == status) == want_equal

    return test


def _not(inner: _Test) -> _Test:
    return lambda record: not inner(record)


def _all(parts: list[_Test]) -> _Test:
    return lambda record: all(part(record) for part in parts)


def _any(parts: list[_Test]) -> _Test:
    return lambda record: any(part(record) for part in parts)


# --------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, expr: str, known_names: frozenset[str], where: str):
        self.expr = expr
        self.known = known_names
        self.where = where
        self.names_used: set[str] = set()
        self.tokens = _tokenize(expr, self.fail)
        self.i = 0

    def fail(self, message: str, column: int) -> PolicyError:
        return PolicyError(self.expr, message, column, self.where)

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self) -> _Test:
        if self.peek().kind == "end":
            raise self.fail("empty expression", 0)
        test = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            if token.text == ")":
                raise self.fail("unmatched ')'", token.pos)
            raise self.not_a_joint(token, "expected 'and' or 'or'")
        return test

    def not_a_joint(self, token: _Token, expected: str) -> PolicyError:
        """The error for a token where 'and' / 'or' (or a ')') had to come."""
        if token.kind == "name" and token.text.lower() in KEYWORDS:
            return self.fail(f"write {token.text.lower()!r} in lower case", token.pos)
        return self.fail(f"{expected} before {_describe(token)}", token.pos)

    def parse_or(self) -> _Test:
        parts = [self.parse_and()]
        while self.peek().kind == "keyword" and self.peek().text == "or":
            parts.append(self.parse_and(after=self.advance()))
        return parts[0] if len(parts) == 1 else _any(parts)

    def parse_and(self, after: _Token | None = None) -> _Test:
        parts = [self.parse_not(after)]
        while self.peek().kind == "keyword" and self.peek().text == "and":
            parts.append(self.parse_not(after=self.advance()))
        return parts[0] if len(parts) == 1 else _all(parts)

    def parse_not(self, after: _Token | None = None) -> _Test:
        if self.peek().kind == "keyword" and self.peek().text == "not":
            token = self.advance()
            return _not(self.parse_not(after=token))
        return self.parse_primary(after)

    def parse_primary(self, after: _Token | None) -> _Test:
        token = self.peek()
        if token.kind == "end":
            where = f" after {_describe(after)}" if after else ""
            raise self.fail(f"expected a condition{where}", token.pos)
        if token.text == "(":
            self.advance()
            if self.peek().text == ")":
                raise self.fail("expected a condition inside '()'", self.peek().pos)
            test = self.parse_or()
            close = self.peek()
            if close.text != ")":
                if close.kind == "end":
                    raise self.fail("'(' is never closed", token.pos)
                raise self.not_a_joint(close, "expected ')', 'and' or 'or'")
            self.advance()
            return test
        if token.kind == "name":
            return self.parse_name()
        if token.kind in ("number", "string"):
            return self.parse_literal_first()
        raise self.fail(f"expected a condition before {_describe(token)}", token.pos)

    def parse_name(self) -> _Test:
        token = self.advance()
        name = token.text
        if name == "status" or name == "scores" or name.startswith("scores."):
            op = self.peek()
            if op.kind != "op" or op.text not in _COMPARISONS:
                example = 'status == "ok"' if name == "status" else f"{name} > 0.9"
                raise self.fail(f"{name} is a value, not a condition: compare it, e.g. "
                                f"{example}", op.pos if op.kind != "end" else token.pos)
            self.advance()
            return self.comparison(token, op.text, self.advance())
        if name in ("match", "takedown"):
            test = _any_match
        elif name.startswith("match."):
            kind = name[len("match."):]
            self.check_known(kind, token.pos + len("match."), "match kind")
            test = _match_kind(kind)
        elif "." in name:
            raise self.fail(f"unknown name {name!r} (only scores.<category> and "
                            f"match.<kind> have a dot)", token.pos)
        else:
            if name.lower() in KEYWORDS:
                raise self.fail(f"write {name.lower()!r} in lower case", token.pos)
            self.check_known(name, token.pos, "name")
            test = _has_name(name)
        following = self.peek()
        if following.kind == "op" and following.text in _COMPARISONS:
            raise self.fail(f"{name!r} is a condition, not a value: only scores.<category> "
                            f"and status compare", following.pos)
        return test

    def parse_literal_first(self) -> _Test:
        literal = self.advance()
        op = self.peek()
        if op.kind != "op" or op.text not in _COMPARISONS:
            raise self.fail(f"a {literal.kind} is not a condition: compare it with "
                            f"scores.<category> or status", literal.pos)
        self.advance()
        field = self.advance()
        if field.kind != "name" or not (field.text == "status" or field.text.startswith("scores.")):
            raise self.fail(f"expected scores.<category> or status after {op.text!r}",
                            field.pos)
        return self.comparison(field, _FLIPPED[op.text], literal)

    def comparison(self, field: _Token, op: str, literal: _Token) -> _Test:
        if field.text == "status":
            if op not in ("==", "!="):
                raise self.fail(f"status compares only with == and !=, not {op!r}", field.pos)
            if literal.kind != "string":
                raise self.fail(f'expected a quoted status after {op!r}, e.g. status == "ok"',
                                literal.pos)
            if literal.value not in STATUSES:
                raise self.fail(f"unknown status {literal.value!r} (statuses: "
                                f"{', '.join(STATUSES)})", literal.pos)
            test = _status_test(op, literal.value)
        else:
            category = field.text[len("scores."):]
            if not category or "." in category:
                raise self.fail("expected scores.<category>", field.pos)
            self.check_known(category, field.pos + len("scores."), "category")
            if literal.kind != "number":
                raise self.fail(f"expected a number after {op!r}", literal.pos)
            try:
                limit = float(literal.text)
            except ValueError:
                raise self.fail(f"bad number {literal.text!r}", literal.pos) from None
            if not math.isfinite(limit):
                raise self.fail(f"bad number {literal.text!r}", literal.pos)
            test = _score_test(category, op, limit)
        following = self.peek()
        if following.kind == "op" and following.text in _COMPARISONS:
            raise self.fail("comparisons do not chain: join them with 'and'", following.pos)
        return test

    def check_known(self, name: str, column: int, what: str) -> None:
        if name in self.known and name not in RESERVED_NAMES:
            self.names_used.add(name)
            return
        known = sorted(self.known - RESERVED_NAMES)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        shown = ", ".join(known[:_MAX_KNOWN_SHOWN])
        if len(known) > _MAX_KNOWN_SHOWN:
            shown += ", ..."
        raise self.fail(f"unknown {what} {name!r} ({hint}known: {shown or 'none'})", column)


# --------------------------------------------------------------------------- public API

class Policy:
    """One compiled policy expression; ``evaluate(record)`` says whether it holds."""

    __slots__ = ("expr", "where", "names_used", "_known", "_test")

    def __init__(self, expr: str, where: str, names_used: frozenset[str],
                 known_names: frozenset[str], test: _Test):
        self.expr = expr
        self.where = where
        # The known names (categories, caption flags, match kinds) the expression refers to.
        self.names_used = names_used
        self._known = known_names
        self._test = test

    def evaluate(self, record: Record) -> bool:
        return bool(self._test(record))

    __call__ = evaluate

    @property
    def reason(self) -> str:
        """What decide() writes into ``reasons`` when this policy fires."""
        return "policy:" + " ".join(self.expr.split())

    def __reduce__(self):
        # Closures do not pickle everywhere; recompiling from the text always works.
        return (compile_policy, (self.expr, set(self._known), self.where))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and (self.expr, self._known) == (other.expr, other._known)

    def __hash__(self) -> int:
        return hash((self.expr, self._known))

    def __repr__(self) -> str:
        return f"Policy({self.expr!r})"


def compile_policy(expr: str, known_names: Iterable[str], where: str = "policy") -> Policy:
    """Parse ``expr`` against ``known_names`` (categories + caption flags + match kinds).

    ``where`` names the expression's place in config (``policy.remove_if[0]``) for errors.
    Raises PolicyError on an unknown name or a syntax error.
    """
    if not isinstance(expr, str):
        raise PolicyError(str(expr), f"expected an expression string, got {type(expr).__name__}",
                          0, where)
    known = frozenset(known_names)
    parser = _Parser(expr, known, where)
    test = parser.parse()
    return Policy(expr, where, frozenset(parser.names_used), known, test)


def compile_policies(exprs: Sequence[str], known_names: Iterable[str],
                     where: str = "policy") -> list[Policy]:
    """compile_policy for each expression of a config list, named ``where[i]`` in errors."""
    known = frozenset(known_names)
    return [compile_policy(expr, known, f"{where}[{i}]") for i, expr in enumerate(exprs)]


def decide(record: Record, remove_policies: Sequence[Policy],
           review_policies: Sequence[Policy]) -> tuple[str, list[str]]:
    """The action for one record and why: ("remove" | "review" | "keep", reasons).

    Remove when the record matches a takedown list (one ``takedown:<list_id>`` reason per
    list, sorted) or any remove policy holds (one ``policy:<expr>`` per policy, in config
    order); else review when any review policy holds; else keep with no reasons. The
    record is not changed.
    """
    list_ids = {
        str(m.get("list_id")) if isinstance(m, Mapping) else "unknown"
        for m in record.get("matches") or ()
    }
    reasons = [f"takedown:{list_id}" for list_id in sorted(list_ids)]
    reasons += [policy.reason for policy in remove_policies if policy.evaluate(record)]
    if reasons:
        return "remove", reasons
    review = [policy.reason for policy in review_policies if policy.evaluate(record)]
    if review:
        return "review", review
    return "keep", []


# The only columns a decision reads (see the record access functions above).
DECISION_COLUMNS = ("status", "labels", "caption_flags", "matches", "scores")
_REASONS_TYPE = pa.list_(pa.string())


def _joined(column: pa.Array, separator: str) -> pa.Array:
    # A list of names as one string; "\x00" stands for a null list (never a name's text).
    return pc.fill_null(pc.binary_join(column, separator), "\x00")


def decide_table(table: pa.Table, remove_policies: Sequence[Policy],
                 review_policies: Sequence[Policy]) -> tuple[pa.Array, pa.Array]:
    """`decide` for every row of a table of audit rows: (action, reasons) columns.

    A decision reads only DECISION_COLUMNS. Rows with takedown matches or scores are
    decided one by one; every other row's decision is a function of its status, labels
    and caption flags, so it is made once per distinct combination of those and spread
    back column-wise."""
    n = table.num_rows
    columns = {name: table.column(name).combine_chunks() for name in DECISION_COLUMNS}
    own = pc.or_(pc.fill_null(pc.greater(pc.list_value_length(columns["matches"]), 0), False),
                 pc.is_valid(columns["scores"])).to_numpy(zero_copy_only=False)
    key = pc.binary_join_element_wise(
        pc.fill_null(columns["status"], "\x00"), _joined(columns["labels"], "\x1f"),
        _joined(columns["caption_flags"], "\x1f"), "\x1e")
    encoded = key.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    groups = len(encoded.dictionary)
    first = np.empty(groups, dtype=np.int64)
    first[codes[::-1]] = np.arange(n - 1, -1, -1, dtype=np.int64)  # the last write wins: each group's first row
    shown = pa.table({name: columns[name] for name in DECISION_COLUMNS})
    actions: list[str] = []
    reasons: list[list[str]] = []
    for record in shown.take(pa.array(first)).to_pylist():
        record["matches"], record["scores"] = [], None  # what every row of the group has
        action, why = decide(record, remove_policies, review_policies)
        actions.append(action)
        reasons.append(why)
    rows = np.flatnonzero(own)
    for record in shown.take(pa.array(rows)).to_pylist():
        action, why = decide(record, remove_policies, review_policies)
        actions.append(action)
        reasons.append(why)
    # Each row's index into the decisions above: its group's, or its own.
    codes = codes.astype(np.int64)
    codes[rows] = groups + np.arange(rows.size, dtype=np.int64)
    indices = pa.array(codes)
    action_column = pa.array(actions, pa.string()).take(indices)
    reasons_column = pa.array(reasons, _REASONS_TYPE).take(indices)
    return action_column, reasons_column


class _DecideAction(beam.DoFn):
    def __init__(self, remove_if: Sequence[str], review_if: Sequence[str], known_names: Iterable[str]):
        self._remove_if, self._review_if = list(remove_if), list(review_if)
        self._known = sorted(known_names)
        self._actions = {a: Metrics.counter("decide", f"action_{a}") for a in ACTIONS}

    def setup(self) -> None:
        self._remove = compile_policies(self._remove_if, self._known, "policy.remove_if")
        self._review = compile_policies(self._review_if, self._known, "policy.review_if")

    def process(self, record: dict):
        action, reasons = decide(record, self._remove, self._review)
        self._actions[action].inc()
        # A new dict: Beam forbids changing an input element another consumer may see.
        yield {**record, "action": action, "reasons": reasons}


@beam.typehints.with_output_types(pa.Table)
class DecideTables(_DecideAction):
    """Tables of audit rows -> the same with `action`, `reasons` (transforms.policy.
    decide_table) and `audited_at` (one time per table) set; `decide/action_*` counted."""

    def process(self, table: pa.Table):
        action, reasons = decide_table(table, self._remove, self._review)
        table = table.set_column(table.schema.get_field_index("action"), "action", action)
        table = table.set_column(table.schema.get_field_index("reasons"), "reasons", reasons)
        when = pa.scalar(_dt.datetime.now(_dt.timezone.utc), AUDIT_SCHEMA.field("audited_at").type)
        at = table.schema.get_field_index("audited_at")
        table = table.set_column(at, "audited_at", pa.repeat(when, table.num_rows))
        for item in pc.value_counts(action).to_pylist():
            self._actions[item["values"]].inc(item["counts"])
        yield table


class DecideAction(beam.PTransform):
    """Set each record's `action` and `reasons` from its matches and the policies."""

    def __init__(self, remove_if: Sequence[str] = (), review_if: Sequence[str] = (),
                 known_names: Iterable[str] = ()):
        super().__init__()
        self._fn = _DecideAction(remove_if, review_if, known_names)

    def expand(self, records):
        return records | beam.ParDo(self._fn)
