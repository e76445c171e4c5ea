"""Name, label, port and env var validation: Kubernetes' rules and messages."""

import pytest

from kubeling import names

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation "
    r"is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
KEY_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


@pytest.mark.parametrize("value", ["a", "0", "my-pod", "web-7d4b9c.abc", "a" * 253, "1.2.3", "x--y"],
                         ids=["letter", "digit", "dash", "dots", "max-length", "numeric-labels", "double-dash"])
def test_dns1123_subdomain_accepts(value):
    assert names.is_dns1123_subdomain(value) == []


@pytest.mark.parametrize("value,errors", [
    ("", [SUBDOMAIN_MSG]),
    ("My-Pod", [SUBDOMAIN_MSG]),
    ("-pod", [SUBDOMAIN_MSG]),
    ("pod-", [SUBDOMAIN_MSG]),
    ("a..b", [SUBDOMAIN_MSG]),
    ("pod_1", [SUBDOMAIN_MSG]),
    ("pod\n", [SUBDOMAIN_MSG]),
    ("a" * 254, ["must be no more than 253 characters"]),
    ("A" * 254, ["must be no more than 253 characters", SUBDOMAIN_MSG]),
], ids=["empty", "uppercase", "leading-dash", "trailing-dash", "empty-label", "underscore",
        "trailing-newline", "too-long", "too-long-and-uppercase"])
def test_dns1123_subdomain_rejects_with_kubernetes_message(value, errors):
    assert names.is_dns1123_subdomain(value) == errors


@pytest.mark.parametrize("value,errors", [
    ("default", []),
    ("kube-system", []),
    ("1abc", []),
    ("a" * 63, []),
    ("a" * 64, ["must be no more than 63 characters"]),
    ("my.name", ["must not contain dots"]),
    ("My-Name", [LABEL_MSG]),
    ("", [LABEL_MSG]),
    ("-a", [LABEL_MSG]),
], ids=["plain", "dash", "leading-digit", "max-length", "too-long", "dots", "uppercase", "empty",
        "leading-dash"])
def test_dns1123_label(value, errors):
    assert names.is_dns1123_label(value) == errors


@pytest.mark.parametrize("value,errors", [
    ("my-svc", []),
    ("a1", []),
    ("1svc", [DNS1035_MSG]),
    ("svc-", [DNS1035_MSG]),
    ("a.b", [DNS1035_MSG]),
    ("a" * 64, ["must be no more than 63 characters"]),
], ids=["plain", "trailing-digit", "leading-digit", "trailing-dash", "dots", "too-long"])
def test_dns1035_label_must_start_with_a_letter(value, errors):
    assert names.is_dns1035_label(value) == errors


@pytest.mark.parametrize("value", [
    "app", "App.Name_1", "kubernetes.io/hostname", "example.com/MyName", "a" * 63,
    "sub.example.com/" + "a" * 63, "1", "a-b"],
    ids=["simple", "mixed-case-dot-underscore", "prefixed", "prefixed-mixed-case", "max-name",
         "max-name-with-prefix", "digit", "dash"])
def test_qualified_name_accepts(value):
    assert names.is_qualified_name(value) == []


@pytest.mark.parametrize("value,errors", [
    ("", ["name part must be non-empty", KEY_NAME_MSG]),
    ("-app", [KEY_NAME_MSG]),
    ("app-", [KEY_NAME_MSG]),
    ("a b", [KEY_NAME_MSG]),
    ("a" * 64, ["name part must be no more than 63 bytes"]),
    ("/app", ["prefix part must be non-empty"]),
    ("example.com/", ["name part must be non-empty", KEY_NAME_MSG]),
    ("Example.com/app", ["prefix part " + SUBDOMAIN_MSG]),
    ("a" * 254 + "/app", ["prefix part must be no more than 253 bytes"]),
], ids=["empty", "leading-dash", "trailing-dash", "space", "name-too-long", "empty-prefix", "empty-name",
        "uppercase-prefix", "prefix-too-long"])
def test_qualified_name_rejects_with_kubernetes_message(value, errors):
    assert names.is_qualified_name(value) == errors


def test_qualified_name_with_two_slashes_is_one_error():
    (error,) = names.is_qualified_name("a/b/c")
    assert error.startswith("a valid label key must consist of alphanumeric characters")
    assert error.endswith("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")


@pytest.mark.parametrize("value,errors", [
    ("", []),
    ("web", []),
    ("v1.2_3-rc", []),
    ("a" * 63, []),
    ("a" * 64, ["must be no more than 63 bytes"]),
    ("-web", [VALUE_MSG]),
    ("web.", [VALUE_MSG]),
    ("a/b", [VALUE_MSG]),
    ("é", [VALUE_MSG]),
], ids=["empty", "plain", "dot-underscore-dash", "max-length", "too-long", "leading-dash", "trailing-dot",
        "slash", "non-ascii"])
def test_label_value(value, errors):
    assert names.is_valid_label_value(value) == errors


@pytest.mark.parametrize("value,errors", [
    ("http", []),
    ("web-8080", []),
    ("a" * 15, []),
    ("a" * 16, ["must be no more than 15 characters"]),
    ("HTTP", ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
              "must contain at least one letter (a-z)"]),
    ("8080", ["must contain at least one letter (a-z)"]),
    ("my--port", ["must not contain consecutive hyphens"]),
    ("-http", ["must not begin or end with a hyphen"]),
    ("http-", ["must not begin or end with a hyphen"]),
    ("", ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
          "must contain at least one letter (a-z)"]),
], ids=["plain", "with-digits", "max-length", "too-long", "uppercase", "digits-only", "double-hyphen",
        "leading-hyphen", "trailing-hyphen", "empty"])
def test_port_name_follows_iana_svc_name(value, errors):
    assert names.is_valid_port_name(value) == errors


@pytest.mark.parametrize("port,valid", [(1, True), (80, True), (65535, True), (0, False), (65536, False),
                                        (-1, False)],
                         ids=["lowest", "http", "highest", "zero", "above-range", "negative"])
def test_port_number_is_1_to_65535(port, valid):
    assert names.is_valid_port_num(port) == ([] if valid else ["must be between 1 and 65535, inclusive"])


@pytest.mark.parametrize("value,errors", [
    ("PATH", []),
    ("my.env-name", []),
    ("_x", []),
    ("-x", []),
    ("x1", []),
    ("1X", ["a valid environment variable name must consist of alphabetic characters, digits, '_', '-', "
            "or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or "
            "'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"]),
    (".", ["must not be '.'"]),
    ("..", ["must not be '..'"]),
    ("..x", ["must not start with '..'"]),
], ids=["upper", "dot-dash", "underscore", "leading-dash", "trailing-digit", "leading-digit", "dot",
        "dot-dot", "dot-dot-prefix"])
def test_env_var_name(value, errors):
    assert names.is_env_var_name(value) == errors


@pytest.mark.parametrize("value,valid", [("my_name", True), ("_X1", True), ("1x", False), ("a-b", False),
                                         ("", False)],
                         ids=["snake", "underscore-first", "digit-first", "dash", "empty"])
def test_c_identifier(value, valid):
    assert (names.is_c_identifier(value) == []) is valid


def test_generated_name_suffix_uses_kubernetes_alphabet():
    suffixes = {names.generate_name_suffix() for _ in range(200)}
    assert all(len(s) == 5 and set(s) <= set("bcdfghjklmnpqrstvwxz2456789") for s in suffixes)
    assert len(suffixes) > 150  # random, not a counter


def test_generated_name_cuts_the_base_to_fit_63_characters():
    name = names.generate_name("x" * 80)
    assert len(name) == 63 and name.startswith("x" * 58)
    assert names.generate_name("web-")[:4] == "web-"
