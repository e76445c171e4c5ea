"""Field selectors: parsing, escaping, matching and exact-match lookups."""

import pytest

from kubeling.fields import (
    FieldRequirement,
    FieldSelectorError,
    escape_value,
    one_term_equal_selector,
    parse_field_selector,
    unescape_value,
)

POD = {"metadata.name": "web-1", "metadata.namespace": "default", "spec.nodeName": "node-1",
       "status.phase": "Running"}
UNSCHEDULED = {"metadata.name": "web-2", "spec.nodeName": ""}


def getter(obj):
    return obj.get


@pytest.mark.parametrize("text,requirements,canonical", [
    ("", [], ""),
    ("spec.nodeName=node-1", [("spec.nodeName", "=", "node-1")], "spec.nodeName=node-1"),
    ("spec.nodeName==node-1", [("spec.nodeName", "=", "node-1")], "spec.nodeName=node-1"),
    ("status.phase!=Running", [("status.phase", "!=", "Running")], "status.phase!=Running"),
    ("spec.nodeName=", [("spec.nodeName", "=", "")], "spec.nodeName="),
    ("b=1,a==2", [("a", "=", "2"), ("b", "=", "1")], "a=2,b=1"),
    ("a=b,,c=d", [("a", "=", "b"), ("c", "=", "d")], "a=b,c=d"),
    (",", [], ""),
    (r"a=x\,y", [("a", "=", "x,y")], r"a=x\,y"),
    (r"a=x\=y", [("a", "=", "x=y")], r"a=x\=y"),
    ("a=x\\\\y", [("a", "=", "x\\y")], "a=x\\\\y"),
    ("a =b", [("a ", "=", "b")], "a =b"),
], ids=["empty", "equals", "double-equals", "not-equals", "empty-value", "sorted", "empty-term-skipped",
        "only-comma", "escaped-comma", "escaped-equals", "escaped-backslash", "whitespace-is-kept"])
def test_parse(text, requirements, canonical):
    selector = parse_field_selector(text)
    assert [tuple(r) for r in selector.requirements] == requirements
    assert str(selector) == canonical
    assert parse_field_selector(str(selector)) == selector


@pytest.mark.parametrize("text,message", [
    ("spec.nodeName", 'invalid field selector "spec.nodeName": can\'t understand "spec.nodeName"'),
    ("a=b,c", 'can\'t understand "c"'),
    ("a=b=c", "unescaped character in value: '='"),
    ("a==b==c", "unescaped character in value: '='"),
    ("a!==b", "unescaped character in value: '=' in \"=b\""),
    (r"a=b\x", r"invalid escape sequence: \x"),
    ("a=b\\", "invalid escape sequence: \\ at the end of value"),
    ("=b", "missing field name before '=' in \"=b\""),
    ("!=b", "missing field name before '!='"),
], ids=["no-operator", "term-without-operator", "unescaped-equals", "unescaped-equals-after-double",
        "first-operator-wins",
        "unknown-escape", "trailing-backslash", "missing-field", "missing-field-not-equals"])
def test_parse_rejects_naming_the_problem(text, message):
    with pytest.raises(FieldSelectorError) as err:
        parse_field_selector(text)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("text,obj,matches", [
    ("", POD, True),
    ("spec.nodeName=node-1", POD, True),
    ("spec.nodeName=node-2", POD, False),
    ("spec.nodeName!=node-2", POD, True),
    ("spec.nodeName=", UNSCHEDULED, True),
    ("spec.nodeName=", POD, False),
    ("status.phase=", UNSCHEDULED, True),
    ("status.phase!=Running", UNSCHEDULED, True),
    ("metadata.name=web-1,status.phase=Running", POD, True),
    ("metadata.name=web-1,status.phase!=Running", POD, False),
], ids=["empty", "equals", "equals-other", "not-equals", "unscheduled-pod", "scheduled-pod",
        "missing-field-reads-empty", "missing-field-not-equals", "and-all", "and-one-fails"])
def test_matches(text, obj, matches):
    assert parse_field_selector(text).matches(getter(obj)) is matches


def test_matches_escaped_values():
    assert parse_field_selector(r"metadata.name=a\,b").matches(getter({"metadata.name": "a,b"}))


@pytest.mark.parametrize("text,field,value", [
    ("spec.nodeName=node-1", "spec.nodeName", "node-1"),
    ("spec.nodeName==node-1,status.phase=Running", "spec.nodeName", "node-1"),
    ("spec.nodeName=", "spec.nodeName", ""),
    ("spec.nodeName!=node-1", "spec.nodeName", None),
    ("status.phase=Running", "spec.nodeName", None),
    ("", "spec.nodeName", None),
], ids=["equals", "among-others", "empty-value", "not-equals", "other-field", "empty-selector"])
def test_value_for_gives_the_required_value_of_an_equality(text, field, value):
    assert parse_field_selector(text).value_for(field) == value


def test_requirements_and_fields():
    selector = parse_field_selector("status.phase!=Failed,spec.nodeName=n1")
    assert selector.requirements == (FieldRequirement("spec.nodeName", "=", "n1"),
                                     FieldRequirement("status.phase", "!=", "Failed"))
    assert selector.fields() == {"spec.nodeName", "status.phase"}
    assert not selector.empty and parse_field_selector("").empty


@pytest.mark.parametrize("raw", ["plain", "a,b", "a=b", "back\\slash", "", "=,\\"],
                         ids=["plain", "comma", "equals", "backslash", "empty", "all-specials"])
def test_escape_round_trips(raw):
    assert unescape_value(escape_value(raw)) == raw
    selector = one_term_equal_selector("metadata.name", raw)
    assert parse_field_selector(str(selector)) == selector
