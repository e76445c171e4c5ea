"""Label selectors: kubectl syntax, LabelSelector objects, sets; matching and canonical form."""

import pytest

from kubeling.labels import (
    Operator,
    Requirement,
    Selector,
    SelectorError,
    new_requirement,
    parse_selector,
    selector_from_label_selector,
    selector_from_set,
)

WEB = {"app": "web", "tier": "frontend", "env": "prod"}


@pytest.mark.parametrize("text,canonical", [
    ("", ""),
    ("   ", ""),
    ("app=web", "app=web"),
    ("app==web", "app==web"),
    ("app!=web", "app!=web"),
    ("app", "app"),
    ("!app", "!app"),
    ("! app", "!app"),
    ("app in (web, api)", "app in (api,web)"),
    ("app notin (db)", "app notin (db)"),
    ("app in (web,web)", "app in (web)"),
    ("tier=frontend,app=web", "app=web,tier=frontend"),
    ("  app = web ,\ttier\n!= db ", "app=web,tier!=db"),
    ("app=", "app="),
    ("app=,tier=x", "app=,tier=x"),
    ("app in ()", "app in ()"),
    ("app in (,web)", "app in (,web)"),
    ("app in (web,)", "app in (,web)"),
    ("app in (a,,b)", "app in (,a,b)"),
    ("in in (notin)", "in in (notin)"),
    ("app=in", "app=in"),
    ("example.com/app=web", "example.com/app=web"),
    ("replicas>3", "replicas>3"),
    ("replicas<3", "replicas<3"),
    ("b=1,a=2,b=0", "a=2,b=1,b=0"),
], ids=["empty", "blank", "equals", "double-equals", "not-equals", "exists", "does-not-exist",
        "bang-space", "in", "notin", "in-dedup", "sorted-by-key", "whitespace-tolerant", "empty-value",
        "empty-value-then-more", "in-empty-set", "in-leading-comma", "in-trailing-comma", "in-double-comma",
        "keywords-as-key-and-value", "keyword-as-value", "prefixed-key", "greater-than", "less-than",
        "same-key-keeps-order"])
def test_parse_gives_canonical_string(text, canonical):
    selector = parse_selector(text)
    assert str(selector) == canonical
    assert parse_selector(str(selector)) == selector


@pytest.mark.parametrize("text,message", [
    ("a in (x", 'invalid label selector "a in (x": unclosed parenthesis at position 5'),
    ("a in (x,", "unclosed parenthesis at position 5"),
    ("a in (", "unclosed parenthesis at position 5"),
    ("a in x", "expected '(' after 'in' but found 'x' at position 5"),
    ("a in (x y)", "expected ',' or ')' in the value list but found 'y' at position 8"),
    ("a in (=)", "expected a value, ',' or ')' in the value list but found '=' at position 6"),
    ("a b", "expected an operator (in, notin, =, ==, !=, >, <) after key \"a\" but found 'b' at position 2"),
    ("a=b c", "expected ',' or end of selector but found 'c' at position 4"),
    ("a=b)", "expected ',' or end of selector but found ')' at position 3"),
    ("!a=b", "expected ',' or end of selector but found '=' at position 2"),
    ("a,", "expected a label key or '!' after ',' but found end of selector at position 2"),
    (",a", "expected a label key or '!' at the start but found ',' at position 0"),
    ("a,,b", "expected a label key or '!' after ',' but found ',' at position 2"),
    ("=a", "expected a label key or '!' at the start but found '=' at position 0"),
    ("!", "expected a label key after '!' but found end of selector at position 1"),
    ("a=(x)", "expected a value after '=' but found '(' at position 2"),
    ("a===b", "expected a value after '==' but found '=' at position 3"),
    ("a>x", "the value after '>' must be an integer, not \"x\" at position 2"),
    ("a<", "the value after '<' must be an integer, not \"\" at position 2"),
], ids=["unclosed", "unclosed-after-comma", "unclosed-empty", "in-without-paren", "space-in-list",
        "operator-in-list", "missing-operator", "space-is-not-and", "stray-paren", "negated-with-value",
        "trailing-comma", "leading-comma", "double-comma", "starts-with-operator", "bang-alone",
        "paren-after-equals", "triple-equals", "gt-not-integer", "lt-empty"])
def test_parse_rejects_bad_syntax_naming_problem_and_position(text, message):
    with pytest.raises(SelectorError) as err:
        parse_selector(text)
    assert message in str(err.value)
    assert str(err.value).startswith(f'invalid label selector "{text}": ')
    assert err.value.selector == text


@pytest.mark.parametrize("text,position,fragment", [
    ("-a=b", 0, 'invalid label key "-a" at position 0: name part must consist of alphanumeric'),
    ("x,Bad_/k=v", 2, 'invalid label key "Bad_/k" at position 2: prefix part a lowercase RFC 1123'),
    ("a/b/c", 0, 'invalid label key "a/b/c"'),
    ("a=-b", 2, 'invalid value "-b" for label key "a" at position 2: a valid label must be'),
    ("a in (ok, b@d)", 10, 'invalid value "b@d" for label key "a" at position 10'),
    ("a=" + "v" * 64, 2, "must be no more than 63 bytes"),
    ("a" * 64, 0, "name part must be no more than 63 bytes"),
], ids=["key-leading-dash", "bad-prefix", "two-slashes", "value-leading-dash", "bad-value-in-set",
        "value-too-long", "key-too-long"])
def test_parse_validates_keys_and_values_like_kubernetes(text, position, fragment):
    with pytest.raises(SelectorError) as err:
        parse_selector(text)
    assert fragment in str(err.value)
    assert err.value.position == position


def test_selector_error_is_a_value_error():
    assert issubclass(SelectorError, ValueError)


@pytest.mark.parametrize("text,labels,matches", [
    ("", {}, True),
    ("", WEB, True),
    ("app=web", WEB, True),
    ("app==web", WEB, True),
    ("app=api", WEB, False),
    ("app=web", {}, False),
    ("app!=api", WEB, True),
    ("app!=web", WEB, False),
    ("missing!=x", WEB, True),
    ("app in (api,web)", WEB, True),
    ("app in (api)", WEB, False),
    ("missing in (x)", WEB, False),
    ("app notin (api)", WEB, True),
    ("app notin (web)", WEB, False),
    ("missing notin (x)", WEB, True),
    ("app", WEB, True),
    ("missing", WEB, False),
    ("!missing", WEB, True),
    ("!app", WEB, False),
    ("app=web,tier=frontend", WEB, True),
    ("app=web,tier=backend", WEB, False),
    ("gpu=", {"gpu": ""}, True),
    ("gpu=", {}, False),
    ("gpu in ()", {"gpu": ""}, True),
    ("n>3", {"n": "4"}, True),
    ("n>3", {"n": "3"}, False),
    ("n<3", {"n": "-7"}, True),
    ("n>3", {"n": "four"}, False),
    ("n>3", {}, False),
    ("n<10", {"n": "99999999999999999999"}, False),
], ids=["empty-no-labels", "empty-any-labels", "equals", "double-equals", "equals-other", "equals-missing",
        "not-equals", "not-equals-same", "not-equals-missing-key", "in", "in-other", "in-missing-key",
        "notin", "notin-listed", "notin-missing-key", "exists", "exists-missing", "does-not-exist",
        "does-not-exist-present", "and-all", "and-one-fails", "empty-value", "empty-value-missing",
        "in-empty-value", "gt", "gt-equal", "lt-negative-label", "gt-not-a-number", "gt-missing",
        "lt-out-of-int64"])
def test_matches(text, labels, matches):
    assert parse_selector(text).matches(labels) is matches


def test_requirements_expose_key_operator_and_sorted_values():
    selector = parse_selector("tier notin (b, a), app=web, !canary, ready")
    assert selector.requirements == (
        Requirement("app", Operator.EQUALS, ("web",)),
        Requirement("canary", Operator.DOES_NOT_EXIST, ()),
        Requirement("ready", Operator.EXISTS, ()),
        Requirement("tier", Operator.NOT_IN, ("a", "b")),
    )
    key, op, values = selector.requirements[-1]
    assert (key, op, values) == ("tier", "notin", ("a", "b"))
    assert list(selector) == list(selector.requirements)


@pytest.mark.parametrize("text,empty", [("", True), (" ", True), ("a", False)], ids=["empty", "blank", "one"])
def test_empty(text, empty):
    assert parse_selector(text).empty is empty


@pytest.mark.parametrize("text,key,value", [
    ("app=web", "app", "web"),
    ("app==web", "app", "web"),
    ("app in (web)", "app", "web"),
    ("app in (web,api)", "app", None),
    ("app!=web", "app", None),
    ("app", "app", None),
    ("tier=x", "app", None),
], ids=["equals", "double-equals", "in-one", "in-two", "not-equals", "exists", "other-key"])
def test_value_for_reports_an_exact_match(text, key, value):
    assert parse_selector(text).value_for(key) == value


@pytest.mark.parametrize("labels,expressions,canonical", [
    ({}, [], ""),
    (None, None, ""),
    ({"app": "web"}, [], "app=web"),
    ({"b": "2", "a": "1"}, [], "a=1,b=2"),
    ({}, [("tier", "In", ["b", "a"])], "tier in (a,b)"),
    ({}, [("tier", "NotIn", ["db"])], "tier notin (db)"),
    ({}, [("canary", "Exists", [])], "canary"),
    ({}, [("canary", "DoesNotExist", None)], "!canary"),
    ({"app": "web"}, [{"key": "env", "operator": "In", "values": ["prod"]}], "app=web,env in (prod)"),
], ids=["empty", "none", "match-labels", "match-labels-sorted", "in", "notin", "exists", "does-not-exist",
        "dict-expression"])
def test_from_label_selector(labels, expressions, canonical):
    assert str(selector_from_label_selector(labels, expressions)) == canonical


def test_from_label_selector_accepts_message_like_expressions():
    class Expr:
        key, operator, values = "env", "NotIn", ["dev"]
    selector = selector_from_label_selector({}, [Expr()])
    assert selector.matches({"env": "prod"}) and not selector.matches({"env": "dev"})


def test_from_label_selector_with_nothing_matches_everything():
    assert selector_from_label_selector({}, []).matches({"any": "thing"})


@pytest.mark.parametrize("labels,expressions,message", [
    ({}, [("tier", "In", [])],
     "matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"),
    ({}, [("tier", "NotIn", None)], "matchExpressions[0].values: Required value"),
    ({}, [("a", "Exists", []), ("tier", "Exists", ["x"])],
     "matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
    ({}, [("tier", "DoesNotExist", ["x"])], "matchExpressions[0].values: Forbidden"),
    ({}, [("tier", "in", ["x"])], 'matchExpressions[0].operator: Invalid value: "in": not a valid selector operator'),
    ({}, [("tier", "Gt", ["1"])], 'matchExpressions[0].operator: Invalid value: "Gt"'),
    ({}, [("-tier", "Exists", [])], 'matchExpressions[0].key: Invalid value: "-tier": name part must consist'),
    ({}, [("tier", "In", ["ok", "-x"])], 'matchExpressions[0].values[1]: Invalid value: "-x": a valid label'),
    ({"bad key": "x"}, [], 'matchLabels: Invalid value: "bad key": name part must consist'),
    ({"app": "bad value"}, [], 'matchLabels: Invalid value: "bad value": a valid label'),
], ids=["in-without-values", "notin-without-values", "exists-with-values", "does-not-exist-with-values",
        "lowercase-operator", "gt-operator", "bad-key", "bad-value", "bad-match-label-key",
        "bad-match-label-value"])
def test_from_label_selector_rejects_invalid_objects(labels, expressions, message):
    with pytest.raises(SelectorError) as err:
        selector_from_label_selector(labels, expressions)
    assert str(err.value).startswith("invalid label selector: ")
    assert message in str(err.value)


@pytest.mark.parametrize("labels,matching,not_matching", [
    ({"app": "web"}, {"app": "web", "x": "y"}, {"app": "api"}),
    ({"app": "web", "tier": "fe"}, {"app": "web", "tier": "fe"}, {"app": "web"}),
], ids=["one-pair", "two-pairs"])
def test_from_set_requires_every_pair(labels, matching, not_matching):
    selector = selector_from_set(labels)
    assert selector.matches(matching) and not selector.matches(not_matching)


@pytest.mark.parametrize("labels", [{}, None], ids=["empty", "none"])
def test_from_empty_set_matches_everything(labels):
    selector = selector_from_set(labels)
    assert selector.empty and selector.matches({"a": "b"})


def test_from_set_rejects_invalid_pairs():
    with pytest.raises(SelectorError, match='"bad key"'):
        selector_from_set({"bad key": "x"})


def test_from_set_canonical_string_is_sorted():
    assert str(selector_from_set({"tier": "fe", "app": "web"})) == "app=web,tier=fe"


@pytest.mark.parametrize("key,op,values,message", [
    ("a", "in", [], "values set can't be empty"),
    ("a", "=", ["x", "y"], "exact-match compatibility requires one single value"),
    ("a", "exists", ["x"], "values set must be empty for exists and does not exist"),
    ("a", "gt", ["x"], "the value must be an integer"),
    ("a", "In", ["x"], 'operator: Unsupported value: "In"'),
    ("-a", "exists", [], 'key: Invalid value: "-a"'),
], ids=["in-empty", "equals-two-values", "exists-with-value", "gt-not-integer", "unknown-operator",
        "bad-key"])
def test_new_requirement_validates_like_kubernetes(key, op, values, message):
    with pytest.raises(SelectorError, match=message.replace("(", r"\(")):
        new_requirement(key, op, values)


def test_selectors_built_from_requirements_are_sorted_and_comparable():
    built = Selector((new_requirement("tier", "in", ["b", "a"]), new_requirement("app", "=", ["web"])))
    assert built == parse_selector("app=web,tier in (a,b)")
    assert built.add(new_requirement("env", "exists")).value_for("app") == "web"
    assert str(built.add(new_requirement("env", "exists"))) == "app=web,env,tier in (a,b)"
