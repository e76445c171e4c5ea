"""Label selectors, as k8s.io/apimachinery/pkg/labels.

Three ways to build a `Selector`:

- `parse_selector("app=web,tier in (a, b),!canary")`: kubectl's string syntax.
- `selector_from_label_selector(match_labels, match_expressions)`: a
  Kubernetes LabelSelector object (Deployment, ReplicaSet, ... `spec.selector`).
- `selector_from_set({"app": "web"})`: equality on every pair (Service selectors).

A selector is the AND of its requirements; a selector with no requirements
matches everything. What a *missing* LabelSelector means (Kubernetes: nothing)
is the caller's decision. Selectors are immutable; requirements are kept
sorted by key (stable), so `str(selector)` is canonical and deterministic.

String syntax (whitespace between tokens is ignored; whitespace is ' ',
'\\t', '\\r' and '\\n'):

    selector    := "" | requirement ("," requirement)*
    requirement := ["!"] KEY                        exists / does not exist
                 | KEY ("=" | "==" | "!=") [VALUE]  an empty VALUE means ""
                 | KEY ("in" | "notin") "(" [VALUE] ("," [VALUE])* ")"
                 | KEY (">" | "<") INTEGER

Keys must be qualified names and values valid label values (see names.py).
Every error is a SelectorError whose message quotes the selector and names the
problem and its 0-based position, e.g.
`invalid label selector "a in (x": unclosed parenthesis at position 5`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

from kubeling import names


class SelectorError(ValueError):
    """A selector that cannot be parsed or built. `selector` is the text (or
    None for selectors built from objects), `position` the 0-based offset of
    the problem in it (or None)."""

    def __init__(self, message: str, selector: str | None = None, position: int | None = None):
        super().__init__(message)
        self.selector = selector
        self.position = position


class Operator(enum.StrEnum):
    """Requirement operators, with the string values of Kubernetes' selection.Operator."""

    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_EQUALITY = (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS)
_SET = (Operator.IN, Operator.NOT_IN)
_UNARY = (Operator.EXISTS, Operator.DOES_NOT_EXIST)
_NUMERIC = (Operator.GREATER_THAN, Operator.LESS_THAN)
_INT64 = re.compile(r"[+-]?[0-9]+")  # Go's strconv.ParseInt(s, 10, 64), range checked separately


def _parse_int64(value: str) -> int | None:
    if not _INT64.fullmatch(value):
        return None
    n = int(value)
    return n if -2**63 <= n < 2**63 else None


class Requirement(NamedTuple):
    """One term of a selector: `key`, `operator` and sorted `values` (empty for
    EXISTS / DOES_NOT_EXIST, one value for the equality and numeric operators)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this requirement. A missing key satisfies
        only NOT_IN, NOT_EQUALS and DOES_NOT_EXIST."""
        op = self.operator
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if self.key not in labels:
            return op in (Operator.NOT_IN, Operator.NOT_EQUALS)
        value = labels[self.key]
        if op in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return value in self.values
        if op in (Operator.NOT_IN, Operator.NOT_EQUALS):
            return value not in self.values
        # GREATER_THAN / LESS_THAN: both sides must be int64s, else no match.
        have = _parse_int64(value)
        want = _parse_int64(self.values[0]) if len(self.values) == 1 else None
        if have is None or want is None:
            return False
        return have > want if op is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        joined = ",".join(sorted(self.values))
        if op in _SET:
            return f"{self.key} {op.value} ({joined})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{joined}"


def requirement_errors(key: str, operator: Operator | str, values: Iterable[str]) -> list[str]:
    """What is wrong with a requirement, worded as Kubernetes' NewRequirement
    (empty when valid): the key must be a qualified name, the values valid
    label values, and their number must suit the operator."""
    values = list(values)
    errs = []
    key_errs = names.is_qualified_name(key)
    if key_errs:
        errs.append(f'key: Invalid value: "{key}": ' + "; ".join(key_errs))
    try:
        op = Operator(operator)
    except ValueError:
        supported = ", ".join(f'"{o.value}"' for o in Operator)
        return errs + [f'operator: Unsupported value: "{operator}": supported values: {supported}']
    if op in _SET and not values:
        errs.append("values: for 'in', 'notin' operators, values set can't be empty")
    elif op in _EQUALITY and len(values) != 1:
        errs.append("values: exact-match compatibility requires one single value")
    elif op in _UNARY and values:
        errs.append("values: values set must be empty for exists and does not exist")
    elif op in _NUMERIC:
        if len(values) != 1:
            errs.append("values: for 'Gt', 'Lt' operators, exactly one value is required")
        for i, v in enumerate(values):
            if _parse_int64(v) is None:
                errs.append(f'values[{i}]: Invalid value: "{v}": for \'Gt\', \'Lt\' operators, '
                            "the value must be an integer")
    for i, v in enumerate(values):
        value_errs = names.is_valid_label_value(v)
        if value_errs:
            errs.append(f'values[{i}]: Invalid value: "{v}": ' + "; ".join(value_errs))
    return errs


def new_requirement(key: str, operator: Operator | str, values: Iterable[str] = ()) -> Requirement:
    """A validated Requirement (values sorted); raises SelectorError naming
    every problem (see requirement_errors)."""
    values = tuple(sorted(values))
    errs = requirement_errors(key, operator, values)
    if errs:
        raise SelectorError(f'invalid label selector requirement "{key}": ' + "; ".join(errs))
    return Requirement(key, Operator(operator), values)


@dataclass(frozen=True)
class Selector:
    """An AND of requirements, sorted by key. The empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements", tuple(sorted(self.requirements, key=lambda r: r.key)))

    @property
    def empty(self) -> bool:
        """True when the selector has no requirements (it matches everything)."""
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether every requirement holds for `labels` (None means no labels)."""
        labels = labels if labels is not None else {}
        return all(r.matches(labels) for r in self.requirements)

    def add(self, *requirements: Requirement) -> Selector:
        """A new selector with these requirements added."""
        return Selector(self.requirements + requirements)

    def value_for(self, key: str) -> str | None:
        """The single value `key` must equal (from `=`, `==` or a one-value
        `in`), or None; as Kubernetes' RequiresExactMatch, only the first
        requirement on `key` is considered. Lets callers use an index."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __iter__(self) -> Iterator[Requirement]:
        return iter(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def everything() -> Selector:
    """The selector that matches every set of labels."""
    return Selector()


# ---------------------------------------------------------------------------
# String syntax


class _Tok(enum.Enum):
    IDENT = "identifier"
    IN = "in"
    NOT_IN = "notin"
    BANG = "!"
    EQ = "="
    EQEQ = "=="
    NEQ = "!="
    GT = ">"
    LT = "<"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    END = "end of selector"


_SYMBOLS = {t.value: t for t in (_Tok.BANG, _Tok.EQ, _Tok.EQEQ, _Tok.NEQ, _Tok.GT, _Tok.LT,
                                 _Tok.LPAREN, _Tok.RPAREN, _Tok.COMMA)}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_OPERATOR_TOKENS = {_Tok.EQ: Operator.EQUALS, _Tok.EQEQ: Operator.DOUBLE_EQUALS, _Tok.NEQ: Operator.NOT_EQUALS,
                    _Tok.IN: Operator.IN, _Tok.NOT_IN: Operator.NOT_IN,
                    _Tok.GT: Operator.GREATER_THAN, _Tok.LT: Operator.LESS_THAN}


class _Token(NamedTuple):
    kind: _Tok
    text: str
    pos: int

    def shown(self) -> str:
        return "end of selector" if self.kind is _Tok.END else f"'{self.text}'"


def _lex(text: str) -> list[_Token]:
    """Tokens as Kubernetes' lexer makes them: runs of special characters
    become the longest operator they start with ('!=' and '=='); anything else
    up to whitespace or a special character is an identifier, or the keyword
    'in' / 'notin'."""
    tokens, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i == n:
            tokens.append(_Token(_Tok.END, "", i))
            return tokens
        start = i
        if text[i] in _SPECIAL:
            i += 2 if text[i:i + 2] in ("!=", "==") else 1
            tokens.append(_Token(_SYMBOLS[text[start:i]], text[start:i], start))
            continue
        while i < n and text[i] not in _SPECIAL and text[i] not in _WHITESPACE:
            i += 1
        word = text[start:i]
        kind = {"in": _Tok.IN, "notin": _Tok.NOT_IN}.get(word, _Tok.IDENT)
        tokens.append(_Token(kind, word, start))


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _lex(text)
        self.at = 0

    def error(self, problem: str, pos: int, detail: str = "") -> SelectorError:
        message = f'invalid label selector "{self.text}": {problem} at position {pos}'
        return SelectorError(message + (f": {detail}" if detail else ""), self.text, pos)

    def peek(self, values: bool = True) -> _Token:
        return self._as_value(self.tokens[self.at]) if values else self.tokens[self.at]

    def take(self, values: bool = True) -> _Token:
        tok = self.peek(values)
        self.at += 1
        return tok

    @staticmethod
    def _as_value(tok: _Token) -> _Token:
        # Where a key or value is expected, 'in' and 'notin' are plain words: `in in (notin)` is valid.
        return tok._replace(kind=_Tok.IDENT) if tok.kind in (_Tok.IN, _Tok.NOT_IN) else tok

    def parse(self) -> list[Requirement]:
        requirements = []
        if self.peek().kind is _Tok.END:
            return requirements
        while True:
            tok = self.peek()
            if tok.kind not in (_Tok.IDENT, _Tok.BANG):
                where = "after ','" if requirements else "at the start"
                raise self.error(f"expected a label key or '!' {where} but found {tok.shown()}", tok.pos)
            requirements.append(self.requirement())
            tok = self.take()
            if tok.kind is _Tok.END:
                return requirements
            if tok.kind is not _Tok.COMMA:
                raise self.error(f"expected ',' or end of selector but found {tok.shown()}", tok.pos)

    def requirement(self) -> Requirement:
        negated = self.peek().kind is _Tok.BANG
        if negated:
            self.take()
        key_tok = self.take()
        if key_tok.kind is not _Tok.IDENT:
            raise self.error(f"expected a label key after '!' but found {key_tok.shown()}", key_tok.pos)
        key = key_tok.text
        errs = names.is_qualified_name(key)
        if errs:
            raise self.error(f'invalid label key "{key}"', key_tok.pos, "; ".join(errs))
        if negated:
            return Requirement(key, Operator.DOES_NOT_EXIST)
        if self.peek().kind in (_Tok.END, _Tok.COMMA):
            return Requirement(key, Operator.EXISTS)

        op_tok = self.take(values=False)
        op = _OPERATOR_TOKENS.get(op_tok.kind)
        if op is None:
            raise self.error(f"expected an operator (in, notin, =, ==, !=, >, <) after key \"{key}\" "
                             f"but found {op_tok.shown()}", op_tok.pos)
        values = self.value_set(op_tok) if op in _SET else [self.exact_value(op_tok)]
        for value, pos in values:
            errs = names.is_valid_label_value(value)
            if errs:
                raise self.error(f'invalid value "{value}" for label key "{key}"', pos, "; ".join(errs))
        if op in _NUMERIC and _parse_int64(values[0][0]) is None:
            raise self.error(f"the value after '{op_tok.text}' must be an integer, "
                             f"not \"{values[0][0]}\"", values[0][1])
        return Requirement(key, op, tuple(sorted({v for v, _ in values})))

    def exact_value(self, op_tok: _Token) -> tuple[str, int]:
        tok = self.peek()
        if tok.kind in (_Tok.END, _Tok.COMMA):
            return "", tok.pos  # `a=` selects a = "" (Kubernetes allows it)
        self.take()
        if tok.kind is not _Tok.IDENT:
            raise self.error(f"expected a value after '{op_tok.text}' but found {tok.shown()}", tok.pos)
        return tok.text, tok.pos

    def value_set(self, op_tok: _Token) -> list[tuple[str, int]]:
        """`( [v] (, [v])* )`; empty items are the empty value, as in Kubernetes."""
        open_tok = self.take()
        if open_tok.kind is not _Tok.LPAREN:
            raise self.error(f"expected '(' after '{op_tok.text}' but found {open_tok.shown()}", open_tok.pos)
        values: list[tuple[str, int]] = []
        expect_value = True
        while True:
            tok = self.take()
            if tok.kind is _Tok.RPAREN:
                if expect_value:
                    values.append(("", tok.pos))
                return values
            if tok.kind is _Tok.END:
                raise self.error("unclosed parenthesis", open_tok.pos)
            if tok.kind is _Tok.COMMA:
                if expect_value:
                    values.append(("", tok.pos))
                expect_value = True
            elif tok.kind is _Tok.IDENT and expect_value:
                values.append((tok.text, tok.pos))
                expect_value = False
            else:
                wanted = "a value, ',' or ')'" if expect_value else "',' or ')'"
                raise self.error(f"expected {wanted} in the value list but found {tok.shown()}", tok.pos)


def parse_selector(text: str) -> Selector:
    """Parse kubectl's label selector syntax (see the module docstring).
    An empty or blank string selects everything. Raises SelectorError."""
    return Selector(tuple(_Parser(text).parse()))


# ---------------------------------------------------------------------------
# Objects

_LABEL_SELECTOR_OPERATORS = {"In": Operator.IN, "NotIn": Operator.NOT_IN,
                             "Exists": Operator.EXISTS, "DoesNotExist": Operator.DOES_NOT_EXIST}


def _expression_parts(expr: Any) -> tuple[str, str, list[str]]:
    """(key, operator, values) from a tuple, a dict or a message with those fields."""
    if isinstance(expr, Mapping):
        return expr.get("key", ""), expr.get("operator", ""), list(expr.get("values") or ())
    if hasattr(expr, "key") and hasattr(expr, "operator"):
        return expr.key, expr.operator, list(expr.values)
    key, operator, values = expr
    return key, operator, list(values or ())


def label_selector_errors(match_labels: Mapping[str, str] | None,
                          match_expressions: Iterable[Any] | None = ()) -> list[str]:
    """Field errors of a LabelSelector, paths relative to the selector, worded
    as Kubernetes' ValidateLabelSelector (empty when valid)."""
    errs = []
    for key, value in (match_labels or {}).items():
        errs += [f'matchLabels: Invalid value: "{key}": {e}' for e in names.is_qualified_name(key)]
        errs += [f'matchLabels: Invalid value: "{value}": {e}' for e in names.is_valid_label_value(value)]
    for i, expr in enumerate(match_expressions or ()):
        path = f"matchExpressions[{i}]"
        key, operator, values = _expression_parts(expr)
        if operator in ("In", "NotIn"):
            if not values:
                errs.append(f"{path}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errs.append(f"{path}.values: Forbidden: may not be specified when `operator` is "
                            "'Exists' or 'DoesNotExist'")
        else:
            errs.append(f'{path}.operator: Invalid value: "{operator}": not a valid selector operator '
                        '(supported: "In", "NotIn", "Exists", "DoesNotExist")')
        errs += [f'{path}.key: Invalid value: "{key}": {e}' for e in names.is_qualified_name(key)]
        for j, value in enumerate(values):
            errs += [f'{path}.values[{j}]: Invalid value: "{value}": {e}' for e in names.is_valid_label_value(value)]
    return errs


def selector_from_label_selector(match_labels: Mapping[str, str] | None,
                                 match_expressions: Iterable[Any] | None = ()) -> Selector:
    """The Selector of a Kubernetes LabelSelector: `matchLabels` as equality
    requirements plus `matchExpressions` with operators In, NotIn (non-empty
    values) and Exists, DoesNotExist (no values). Expressions may be
    (key, operator, values) tuples, dicts, or LabelSelectorRequirement
    messages. Neither part given -> matches everything. Raises SelectorError
    listing every field error (see label_selector_errors)."""
    expressions = [_expression_parts(e) for e in (match_expressions or ())]
    errs = label_selector_errors(match_labels, expressions)
    if errs:
        raise SelectorError("invalid label selector: " + "; ".join(errs))
    requirements = [Requirement(k, Operator.EQUALS, (v,)) for k, v in (match_labels or {}).items()]
    requirements += [Requirement(k, _LABEL_SELECTOR_OPERATORS[op], tuple(sorted(vs))) for k, op, vs in expressions]
    return Selector(tuple(requirements))


def selector_from_set(labels: Mapping[str, str] | None) -> Selector:
    """A selector requiring every (key, value) pair of `labels`; empty or None
    matches everything. Raises SelectorError for an invalid key or value
    (Kubernetes' ValidatedSelectorFromSet)."""
    errs = label_selector_errors(labels)
    if errs:
        raise SelectorError("invalid label selector: " + "; ".join(errs))
    return Selector(tuple(Requirement(k, Operator.EQUALS, (v,)) for k, v in (labels or {}).items()))
