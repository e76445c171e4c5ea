"""Field selectors, as k8s.io/apimachinery/pkg/fields.

    selector := "" | term ("," term)*
    term     := FIELD ("=" | "==" | "!=") VALUE

FIELD is everything before the first operator (no escaping); VALUE may be
empty (`spec.nodeName=` selects pods not yet scheduled) and escapes ',', '='
and '\\' with a backslash. As in Kubernetes, nothing is trimmed (whitespace is
part of the field or value) and empty terms (`a=b,,c=d`) are skipped. Which
fields exist is the caller's business: this module only parses and matches.

`==` means the same as `=`; requirements and `str()` use `=` and `!=` only,
with terms sorted, so `str(selector)` is canonical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

EQUALS = "="
NOT_EQUALS = "!="
# "==" is tried before "=" so it does not leave a leading "=" in the value.
_TERM_OPERATORS = ("!=", "==", "=")


class FieldSelectorError(ValueError):
    """A field selector that cannot be parsed; the message names the problem."""


class FieldRequirement(NamedTuple):
    """One term: `field` `operator` ("=" or "!=") `value` (unescaped)."""

    field: str
    operator: str
    value: str

    def matches(self, get: Callable[[str], str | None]) -> bool:
        actual = get(self.field)
        actual = "" if actual is None else actual  # a missing field reads as "", as in Kubernetes' fields.Set
        return (actual == self.value) == (self.operator == EQUALS)

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """An AND of field requirements; the empty selector matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, get: Callable[[str], str | None]) -> bool:
        """Whether the object matches. `get(path)` returns the object's value
        for a field path as a string, or None when it has none (read as "")."""
        return all(r.matches(get) for r in self.requirements)

    def value_for(self, field: str) -> str | None:
        """The value an equality term requires `field` to have, or None. Lets
        the server answer `spec.nodeName=X` from an index. As Kubernetes'
        RequiresExactMatch, the first equality term on `field` wins."""
        for r in self.requirements:
            if r.field == field and r.operator == EQUALS:
                return r.value
        return None

    def fields(self) -> set[str]:
        """Every field path the selector reads (for checking they are supported)."""
        return {r.field for r in self.requirements}

    def __iter__(self) -> Iterator[FieldRequirement]:
        return iter(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def escape_value(value: str) -> str:
    """Escape '\\', ',' and '=' so the value can be written in a selector."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_value(text: str, selector: str | None = None) -> str:
    """Undo escape_value. Raises FieldSelectorError for an unknown escape
    (`\\x`), a trailing backslash, or an unescaped ',' or '='."""
    where = f"invalid field selector {_quote(selector if selector is not None else text)}"
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 == len(text):
                raise FieldSelectorError(f"{where}: invalid escape sequence: \\ at the end of value {_quote(text)}")
            if text[i + 1] not in "\\,=":
                raise FieldSelectorError(f"{where}: invalid escape sequence: \\{text[i + 1]} "
                                         f"in value {_quote(text)} (only \\\\, \\, and \\= are allowed)")
            out.append(text[i + 1])
            i += 2
            continue
        if c in ",=":
            raise FieldSelectorError(f"{where}: unescaped character in value: '{c}' "
                                     f"in {_quote(text)} (write \\{c})")
        out.append(c)
        i += 1
    return "".join(out)


def _quote(s: str) -> str:
    return f'"{s}"'


def _split_terms(text: str) -> list[str]:
    """Split on commas not escaped by a backslash; escapes stay in the terms."""
    terms, start, escaped = [], 0, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """(field, operator, raw value) split at the first operator, or None."""
    for i in range(len(term)):
        for op in _TERM_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def parse_field_selector(text: str) -> FieldSelector:
    """Parse a field selector (see the module docstring); "" selects everything.
    Raises FieldSelectorError naming the term or value that is wrong."""
    requirements = []
    for term in sorted(_split_terms(text)) if text else ():
        if not term:
            continue
        split = _split_term(term)
        if split is None:
            raise FieldSelectorError(f"invalid field selector {_quote(text)}: can't understand {_quote(term)}; "
                                     "expected <field>=<value>, <field>==<value> or <field>!=<value>")
        field, op, raw = split
        if not field:
            raise FieldSelectorError(f"invalid field selector {_quote(text)}: "
                                     f"missing field name before '{op}' in {_quote(term)}")
        requirements.append(FieldRequirement(field, NOT_EQUALS if op == "!=" else EQUALS,
                                             unescape_value(raw, text)))
    return FieldSelector(tuple(requirements))


def one_term_equal_selector(field: str, value: str) -> FieldSelector:
    """The selector `field=value` (Kubernetes' OneTermEqualSelector), e.g. a
    node agent's `spec.nodeName=<node>`."""
    return FieldSelector((FieldRequirement(field, EQUALS, value),))
